"""Atomic writes and output directories: output appears complete or not at all, and an
existing directory is replaced whole (``--overwrite``) or not touched, never mixed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

MARKER = "fedrag_output.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, is_dir: bool) -> None:
    """Temp files are owner-only (0600/0700); published outputs get the usual umask mode."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


@contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp directory next to ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        _publish_mode(tmp, True)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind of fedrag output in ``path`` (``train``, ``index``, ...), else None."""
    path = Path(path)
    if (path / MARKER).is_file():
        try:
            return json.loads((path / MARKER).read_text()).get("kind")
        except (OSError, ValueError):
            return None
    if (path / "manifest.json").is_file() and (path / "embeddings.npy").exists():
        return "index"
    return None


def check_out(out: str | os.PathLike, kind: str, overwrite: bool = False) -> None:
    """Refuse an existing non-empty ``out`` unless ``overwrite`` (then it is replaced whole)."""
    from fedrag.errors import FedragError

    out = Path(out)
    if not out.exists() or overwrite:
        return
    if not out.is_dir():
        raise FedragError(f"{out} exists and is not a directory; choose another --out")
    if any(out.iterdir()):
        found = output_kind(out)
        what = f"holds a fedrag {found} output" if found else "is not empty and is not a fedrag output"
        raise FedragError(f"{out} already exists and {what}; pass --overwrite to replace it whole, or choose another --out")


@contextmanager
def output_dir(out: str | os.PathLike, kind: str, overwrite: bool = False, meta: dict | None = None):
    """Build a ``kind`` output in a temp sibling of ``out``, renamed onto ``out`` only on
    success (Ctrl-C, SIGTERM or an error leave ``out`` as it was)."""
    check_out(out, kind, overwrite)
    with atomic_dir(out) as tmp:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"kind": kind, **(meta or {})}, indent=2) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _publish_mode(Path(tmp), False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
