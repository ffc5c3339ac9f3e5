"""A repository script (an example, a benchmark) run as `python SCRIPT ARGS` runs it, but in
the test's process, whose libraries are imported already: a new interpreter that holds a
model costs ~8 CPU-s of imports (torch, transformers, sentence-transformers)."""

import runpy
import sys
from pathlib import Path


def run_script(monkeypatch, capsys, script: Path, *args) -> tuple[int, str, str]:
    """Run `script` as `__main__` with `args` as its command line: its exit status, standard
    output and standard error. The script's additions to `sys.path` are undone afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
    try:
        runpy.run_path(str(script), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
