"""scripts/setup.sh's kept environment: a new checkout's .venv linked from one runs the
checkout's own code with the kept compiled modules, and changes no file of the kept one."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _checkout(dest: Path) -> Path:
    """What setup.sh reads of a checkout: its script, the project's metadata and package."""
    (dest / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", dest / "scripts")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, dest)
    shutil.copytree(ROOT / "fedrag", dest / "fedrag", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _kept_from_this_venv(kept: Path) -> list[Path]:
    """A kept environment made from the one running this suite as setup.sh keeps one (hard
    links, and the path it was made at). The files naming a checkout (bin/'s scripts,
    fedrag's editable install) are real copies, so a set-up that edited them in place would
    change these and not this suite's environment. Returns them."""
    venv = Path(sys.prefix)
    assert venv != Path(sys.base_prefix), "the suite runs in a virtual environment (.venv)"
    kept.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(venv), str(kept / "venv")], check=True)
    (kept / "origin").write_text(f"{venv}\n")
    site = kept / "venv" / Path(sysconfig.get_paths()["purelib"]).relative_to(venv)
    files = [p for p in (kept / "venv" / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    files += [p for p in [*site.glob("*fedrag*"), *site.glob("fedrag-*.dist-info/**/*")] if p.is_file()]
    for path in files:  # a copy of its own instead of a link
        data, mode = path.read_bytes(), path.stat().st_mode
        path.unlink()
        path.write_bytes(data)
        path.chmod(mode)
    return files


@pytest.mark.slow
def test_a_checkout_linked_from_a_kept_environment_runs_its_own_code_and_changes_nothing_kept(tmp_path):
    """`setup.sh --test` in a new checkout, with a kept environment for its options: the
    checkout's .venv is linked from it, its scripts start its own interpreter, it imports the
    checkout's fedrag, Flower's modules load from the kept .pyc files (none compiled again),
    and every file of the kept environment is byte for byte as it was."""
    checkout = _checkout(tmp_path / "checkout")
    # as a user's shell starts it: no PYTHONPATH, no checkout in the working directory
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FEDRAG_SETUP_CACHE")}
    env = {**clean, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHON": sys._base_executable}
    setup = ["bash", "scripts/setup.sh", "--test"]
    res = subprocess.run([*setup, "--kept-path"], cwd=checkout, env=env, capture_output=True, text=True, check=True)
    kept = Path(res.stdout.strip())
    assert kept.is_relative_to(tmp_path / "cache" / "fedrag" / "venvs")
    rewritten = _kept_from_this_venv(kept)
    before = {p: p.read_bytes() for p in rewritten}

    res = subprocess.run(setup, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"linked from the kept environment {kept}" in res.stdout, res.stdout
    venv = checkout / ".venv"
    assert (venv / "bin" / "flower-superlink").read_text().splitlines()[0] == f"#!{venv}/bin/python"
    scripts = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    elsewhere = [p.name for p in scripts if str(sys.prefix).encode() in p.read_bytes()]
    assert not elsewhere, f"scripts that would run the environment the kept one was made from: {elsewhere}"
    code = "import fedrag, sys; print(fedrag.__file__, sys.prefix)"
    run = {"cwd": tmp_path, "env": clean, "capture_output": True, "text": True}
    res = subprocess.run([venv / "bin" / "python", "-c", code], **run, check=True)
    assert res.stdout.split() == [str(checkout / "fedrag" / "__init__.py"), str(venv)]
    res = subprocess.run([venv / "bin" / "fedrag", "--help"], **run, timeout=300)
    assert res.returncode == 0 and "quickstart" in res.stdout, res.stderr
    res = subprocess.run([venv / "bin" / "python", "-v", "-c", "import flwr"], **run, check=True)
    compiled = [line for line in res.stderr.splitlines() if line.startswith("# code object from") and line.endswith(".py")]
    assert len(compiled) <= 1 and all("__editable__" in line for line in compiled), compiled[:5]

    changed = [str(p) for p, data in before.items() if not p.is_file() or p.read_bytes() != data]
    assert not changed, f"files of the kept environment changed: {changed[:5]}"
