"""The on-disk contract: corpus JSONL and QA JSONL, validated line by line.

corpus: `{"id": str, "title": str (optional), "text": str (may be empty if there is a title)}`
QA:     `{"id": str, "question": str, "answers": [str], "gold_ids": [str] (optional)}`

Each line is parsed and checked so that an error names the file and the line. Data in
Hugging Face `datasets` form comes in through [`fedrag.data.load_hf`][fedrag.data.load_hf].
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedrag._io import atomic_write_text
from fedrag.data.types import Example, Passage, RecordLog
from fedrag.errors import DataError


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, object)`; blank lines are skipped, bad JSON raises DataError."""
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


def load_corpus(path: str | os.PathLike, strict: bool = False) -> list[Passage]:
    """Read a corpus JSONL file; ids must be unique.

    A passage with a title and empty text is kept (Wikipedia-derived corpora have
    title-only sections; [`Passage.as_text`][Passage.as_text] is then the title). One with neither
    title nor text cannot be retrieved: it is skipped, and how many were is reported
    in one line on stderr.

    Args:
        path: the corpus JSONL (`.gz` too).
        strict: refuse a passage with neither title nor text instead of skipping it.

    Raises:
        DataError: one line naming the file and line of the first problem.
    """
    passages, seen, log = [], set(), RecordLog(strict=strict)
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        pid, text = _str(obj, "id", where), _str(obj, "text", where)
        title = _str(obj, "title", where, required=False)
        if not text.strip() and not title.strip():
            log.skip(where, "passage has neither title nor text")
            continue
        if pid in seen:
            raise DataError(f"{where}: duplicate passage id '{pid}'")
        seen.add(pid)
        passages.append(Passage(id=pid, text=text, title=title))
    if not passages:
        raise DataError(f"{path}: corpus is empty" + (f" ({log.summary('passage')})" if log.skipped else ""))
    log.warn("passage")  # a warning, not an error: the rest of the corpus is usable as it is
    return passages


def load_qa(path: str | os.PathLike, limit: int | None = None) -> list[Example]:
    """Read a QA JSONL file (optionally only the first `limit` examples)."""
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


def check_dataset(directory: str | os.PathLike) -> None:
    """Load what `fedrag convert` writes (`corpus.jsonl`, `qa.jsonl` or
    `train.jsonl` + `test.jsonl`) as the commands that read it will, strictly.

    Raises:
        DataError: one line naming the file (and line) that would not load, or a gold
            id that names no passage of the corpus.
    """
    directory = Path(directory)
    corpus = directory / "corpus.jsonl"
    passages = load_corpus(corpus, strict=True) if corpus.exists() else None
    for name in ("qa.jsonl", "train.jsonl", "test.jsonl"):
        if (directory / name).exists():
            examples = load_qa(directory / name)
            if passages is not None:  # without a corpus, gold ids name passages of one the user has
                check_gold_ids(examples, passages, str(directory / name))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict | Passage | Example]) -> None:
    """Write rows atomically, one JSON object per line."""
    lines = [json.dumps(r if isinstance(r, dict) else r.to_dict(), ensure_ascii=False) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
