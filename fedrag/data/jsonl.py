"""The on-disk contract: corpus JSONL and QA JSONL, validated line by line.

corpus: ``{"id": str, "title": str (optional), "text": str}``
QA:     ``{"id": str, "question": str, "answers": [str], "gold_ids": [str] (optional)}``

Each line is parsed and checked so that an error names the file and the line. Data in
Hugging Face ``datasets`` form comes in through :func:`fedrag.data.load_hf`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedrag._io import atomic_write_text
from fedrag.data.types import Example, Passage
from fedrag.errors import DataError


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)``; blank lines are skipped, bad JSON raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with _open(path) as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _str(obj: dict, key: str, where: str, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise DataError(f"{where}: missing required field '{key}'")
        return ""
    value = obj[key]
    if isinstance(value, int) and key == "id":
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def _str_list(obj: dict, key: str, where: str, required: bool) -> tuple[str, ...]:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(f"{where}: missing required field '{key}'")
        return ()
    value = obj[key]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise DataError(f"{where}: field '{key}' must be a list of strings")
    return tuple(str(v) for v in value)


def load_corpus(path: str | os.PathLike) -> list[Passage]:
    """Read a corpus JSONL file; ids must be unique and texts non-empty."""
    passages, seen = [], set()
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        pid, text = _str(obj, "id", where), _str(obj, "text", where)
        if not text.strip():
            raise DataError(f"{where}: field 'text' is empty")
        if pid in seen:
            raise DataError(f"{where}: duplicate passage id '{pid}'")
        seen.add(pid)
        passages.append(Passage(id=pid, text=text, title=_str(obj, "title", where, required=False)))
    if not passages:
        raise DataError(f"{path}: corpus is empty")
    return passages


def load_qa(path: str | os.PathLike, limit: int | None = None) -> list[Example]:
    """Read a QA JSONL file (optionally only the first ``limit`` examples)."""
    examples = []
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        answers = _str_list(obj, "answers", where, required=True)
        if not answers:
            raise DataError(f"{where}: field 'answers' is empty")
        examples.append(
            Example(
                id=_str(obj, "id", where),
                question=_str(obj, "question", where),
                answers=answers,
                gold_ids=_str_list(obj, "gold_ids", where, required=False),
            )
        )
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"{path}: no QA examples")
    return examples


def check_gold_ids(examples: Iterable[Example], passages: Iterable[Passage], path: str = "qa") -> None:
    """Fail if a gold id names no passage of the corpus (a mismatched corpus/QA pair)."""
    ids = {p.id for p in passages}
    for ex in examples:
        missing = [g for g in ex.gold_ids if g not in ids]
        if missing:
            raise DataError(f"{path}: example '{ex.id}' has gold id '{missing[0]}' not in the corpus")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict | Passage | Example]) -> None:
    """Write rows atomically, one JSON object per line."""
    lines = [json.dumps(r if isinstance(r, dict) else r.to_dict(), ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
