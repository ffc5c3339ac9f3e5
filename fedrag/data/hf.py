"""Hugging Face ``datasets`` as input: a QA set or a corpus in any column layout.

``load_hf(source, columns, split)`` reads a dataset saved with ``save_to_disk`` (a
directory), Parquet / Arrow / JSON(L) / CSV files (a path or a glob), or a Hub id (only
when the Hub is reachable: ``FEDRAG_ONLINE=1``), and maps its columns onto fedrag's
fields. ``columns`` maps a fedrag field to a column; a dotted name reaches into a nested
column (``answers.text`` for SQuAD's ``{"text": [...], "answer_start": [...]}``).

* A **QA set** has ``question`` and ``answers`` (a string, a list of strings, or a dict
  with ``text``), optionally ``id`` and ``gold_ids``. With a ``context`` column (and
  optionally ``title``) each distinct context becomes a passage of the corpus and the
  gold passage of its questions, as in SQuAD.
* A **corpus** has ``text`` and no ``question``; optionally ``id`` and ``title``.

Columns left out of ``columns`` are looked up under the field's own name. Returns
``(passages, examples)`` like every converter.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from fedrag.data.types import Example, Passage
from fedrag.errors import DataError

QA_FIELDS = ("question", "answers", "id", "gold_ids", "context", "title")
CORPUS_FIELDS = ("text", "id", "title")
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def parse_columns(spec: str) -> dict[str, str]:
    """``"question=query,answers=answers.text"`` -> ``{"question": "query", "answers": "answers.text"}``."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not column or field not in QA_FIELDS + CORPUS_FIELDS:
            raise DataError(f"--columns: '{part}' is not FIELD=COLUMN with FIELD one of "
                            f"{', '.join(dict.fromkeys(QA_FIELDS + CORPUS_FIELDS))}")
        out[field] = column
    return out


def _open(source: str, split: str | None):
    import datasets

    path = Path(source)
    files = sorted(glob.glob(source)) if any(c in source for c in "*?[") else ([source] if path.is_file() else [])
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        elif files:
            builder = BUILDERS.get(Path(files[0]).suffix)
            if builder is None:
                raise DataError(f"{source}: unknown file type (expected {', '.join(BUILDERS)})")
            ds = datasets.load_dataset(builder, data_files=files)
        elif os.environ.get("HF_DATASETS_OFFLINE") == "1":
            raise DataError(f"{source}: no such dataset directory or file (a Hub id needs FEDRAG_ONLINE=1 and network)")
        else:
            ds = datasets.load_dataset(source)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types
        raise DataError(f"{source}: could not load the dataset ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in ds:
            raise DataError(f"{source}: choose a split with --split ({', '.join(names)})")
        ds = ds[split]
    elif split not in (None, "train"):
        raise DataError(f"{source}: a single dataset has no split '{split}'")
    return ds


def _get(row: dict, column: str, where: str):
    value = row
    for key in column.split("."):
        if not isinstance(value, dict) or key not in value:
            raise DataError(f"{where}: no column '{column}'")
        value = value[key]
    return value


def _texts(value, column: str, where: str) -> tuple[str, ...]:
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(value))
    raise DataError(f"{where}: column '{column}' holds {type(value).__name__}, expected text or a list of texts")


def load_hf(source: str | os.PathLike, columns: dict[str, str] | None = None,
            split: str | None = None) -> tuple[list[Passage], list[Example]]:
    """``(passages, examples)`` from a Hugging Face dataset; see the module docstring."""
    from fedrag.data.converters import stable_id

    source = str(source)
    ds = _open(source, split)
    have = set(ds.column_names)
    col = {f: (columns or {}).get(f, f) for f in QA_FIELDS + CORPUS_FIELDS}
    present = {f for f, c in col.items() if c.split(".")[0] in have}
    for f, c in (columns or {}).items():
        if f not in present:
            raise DataError(f"{source}: no column '{c.split('.')[0]}' (columns: {', '.join(sorted(have))})")
    passages: dict[str, Passage] = {}
    examples = []
    corpus = "question" not in present and "text" in present
    missing = [] if corpus else [f for f in ("question", "answers") if f not in present]
    if missing:
        raise DataError(f"{source}: no column for {', '.join(missing)} (a QA set) or text (a corpus) "
                        f"(columns: {', '.join(sorted(have))}); map yours with --columns FIELD=COLUMN")
    for i, row in enumerate(ds):
        where = f"{source}: row {i}"
        title = str(_get(row, col["title"], where)) if "title" in present else ""
        if corpus:
            text = str(_get(row, col["text"], where))
            pid = str(_get(row, col["id"], where)) if "id" in present else stable_id(title, text)
            if text.strip():
                passages.setdefault(pid, Passage(id=pid, title=title, text=text))
            continue
        gold = _texts(_get(row, col["gold_ids"], where), col["gold_ids"], where) if "gold_ids" in present else ()
        if "context" in present:
            contexts = _texts(_get(row, col["context"], where), col["context"], where)
            ids = [stable_id(title, c) for c in contexts]
            for pid, c in zip(ids, contexts):
                passages.setdefault(pid, Passage(id=pid, title=title, text=c))
            gold = gold or tuple(ids)
        examples.append(Example(id=str(_get(row, col["id"], where)) if "id" in present else str(i),
                                question=str(_get(row, col["question"], where)),
                                answers=_texts(_get(row, col["answers"], where), col["answers"], where),
                                gold_ids=gold))
    return list(passages.values()), examples
