"""Atomic writes and output directories: output appears complete or not at all, and an
existing directory is replaced whole (`--overwrite`) or not touched, never mixed."""

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


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` onto `target`, replacing a directory there whole."""
    _publish_mode(tmp, True)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp directory next to `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind of fedrag output in `path` (`train`, `index`, ...), else None."""
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
    """Refuse an existing non-empty `out` unless `overwrite` (then it is replaced whole)."""
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
def out_lock(out: str | os.PathLike):
    """Hold an exclusive lock on `out` for this process (a hidden `.NAME.lock` beside it).

    A second fedrag process writing the same `--out` is refused at once instead of both
    succeeding and one silently replacing the other. The lock dies with its process
    (`flock`), so a killed run never leaves `out` locked."""
    import fcntl

    from fedrag.errors import FedragError

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_name(f".{out.name}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FedragError(f"{out} is being written by another fedrag process; wait for it or choose another --out") from None
        try:  # the holder before us may have unlinked the file: then lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content (what a resume checks, not the path as typed)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def output_dir(out: str | os.PathLike, kind: str, overwrite: bool = False, meta: dict | None = None):
    """Build a `kind` output in a temp sibling of `out`, renamed onto `out` only on
    success (Ctrl-C, SIGTERM or an error leave `out` as it was); one process at a time."""
    with out_lock(out):
        check_out(out, kind, overwrite)
        with atomic_dir(out) as tmp:
            yield tmp
            (tmp / MARKER).write_text(json.dumps({"kind": kind, **(meta or {})}, indent=2) + "\n")


@contextmanager
def resumable_dir(out: str | os.PathLike, kind: str, identity: dict, overwrite: bool = False, meta: dict | None = None, log=None):
    """Like [`output_dir`][output_dir], but the work directory (`.NAME.partial` beside `out`)
    survives a failure, Ctrl-C or SIGKILL, so the same command continues it.

    Yields `(work_dir, resumed)`. `identity` (JSON) is what the run must match to
    continue: another command finding the partial work is refused with one line naming
    what differs, or with `overwrite` discards it (which also replaces a finished
    `out`); the same command continues it, `overwrite` or not."""
    from fedrag.errors import FedragError

    out = Path(out)
    work = out.with_name(f".{out.name}.partial")
    wanted = json.loads(json.dumps(identity))
    with out_lock(out):
        check_out(out, kind, overwrite)
        resumed = False
        if work.exists():
            try:
                had = json.loads((work / "identity.json").read_text())
            except (OSError, ValueError):
                had = None
            if had != wanted and overwrite:  # another command's progress: --overwrite discards it
                shutil.rmtree(work)
            elif had != wanted:
                diff = sorted(k for k in set(wanted) | set(had or {}) if (had or {}).get(k) != wanted.get(k))
                raise FedragError(
                    f"{work} holds an interrupted run of another command (differs in {', '.join(diff) or 'its files'}); "
                    f"run that command again to continue it, or pass --overwrite to discard it"
                )
            else:
                resumed = True
        if not resumed:
            work.mkdir(parents=True)
            atomic_write_json(work / "identity.json", wanted)
        if log and resumed:
            log(f"resuming the interrupted run in {work}")
        try:
            yield work, resumed
        except BaseException as exc:
            exc.add_note(
                f"its progress is kept in {work}: run the same command again to continue (delete that directory to start afresh)"
                if getattr(exc, "resumable", True)
                else f"its checkpoints are in {work}; delete that directory to start afresh"
            )
            raise
        (work / MARKER).write_text(json.dumps({"kind": kind, **(meta or {})}, indent=2) + "\n")
        _publish(work, out)


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
