"""Hugging Face `datasets` as input: a QA set or a corpus in any column layout.

`load_hf(source, columns, split)` reads a dataset saved with `save_to_disk` (a
directory), Parquet / Arrow / JSON(L) / CSV files (a path or a glob), or a Hub id (only
when the Hub is reachable: `FEDRAG_ONLINE=1`), and maps its columns onto fedrag's
fields. `columns` maps a fedrag field to a column; a dotted name reaches into a nested
column (`answers.text` for SQuAD's `{"text": [...], "answer_start": [...]}`).

* A **QA set** has `question` and `answers` (a string, a list of strings, or a dict
  with `text`), optionally `id` and `gold_ids`. With a `context` column (and
  optionally `title`) each distinct context becomes a passage of the corpus and the
  gold passage of its questions, as in SQuAD.
* A **corpus** has `text` and no `question`; optionally `id` and `title`.

Columns left out of `columns` are looked up under the field's own name. Returns
`(passages, examples)` like every converter, and checks every row the same way: a null
is no value (never the text `"None"`), so a row whose required field is null or empty
is skipped and counted; a repeated id becomes `ID#2`.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from fedrag.data.fields import BadRecord, Corpus, UniqueIds, answers_of, id_of, stable_id, take_qid, text_of
from fedrag.data.types import Example, Passage, RecordLog
from fedrag.errors import DataError

QA_FIELDS = ("question", "answers", "id", "gold_ids", "context", "title")
CORPUS_FIELDS = ("text", "id", "title")
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def parse_columns(spec: str) -> dict[str, str]:
    """`"question=query,answers=answers.text"` -> `{"question": "query", "answers": "answers.text"}`."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not column or field not in QA_FIELDS + CORPUS_FIELDS:
            raise DataError(
                f"--columns: '{part}' is not FIELD=COLUMN with FIELD one of {', '.join(dict.fromkeys(QA_FIELDS + CORPUS_FIELDS))}"
            )
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
    """The value of `column` (dotted: nested); None where it or a column above it is null."""
    value = row
    for key in column.split("."):
        if value is None:
            return None  # a null struct: its fields are null, not missing columns
        if not isinstance(value, dict) or key not in value:
            raise DataError(f"{where}: no column '{column}'")
        value = value[key]
    return value


def _texts(value, column: str) -> tuple[str, ...]:
    """Contexts: one text or a list of texts, blank ones dropped; at least one."""
    texts = [value] if isinstance(value, str) else value
    if texts is None or not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise BadRecord(f"'{column}' is {'null' if value is None else type(value).__name__}, expected text or a list of texts")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise BadRecord(f"'{column}' is empty")
    return tuple(dict.fromkeys(texts))


def _ids(value, column: str) -> tuple[str, ...]:
    """Gold ids: one id or a list of ids (text or integers); null is none."""
    values = [] if value is None else [value] if isinstance(value, (str, int)) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        raise BadRecord(f"'{column}' is {type(value).__name__}, expected an id or a list of ids")
    return tuple(dict.fromkeys(str(v) for v in values))


def load_hf(
    source: str | os.PathLike, columns: dict[str, str] | None = None, split: str | None = None, log: RecordLog | None = None
) -> tuple[list[Passage], list[Example]]:
    """`(passages, examples)` from a Hugging Face dataset; see the module docstring.

    Args:
        source: a `save_to_disk` directory, data file(s) or glob, or a Hub id.
        columns: fedrag field -> column (dotted for nested columns).
        split: the split to read where the dataset has several.
        log: counts rows skipped (a null or empty required field, a wrong type) and
            renamed (a repeated id); strict refuses them. Default: a warning on stderr.

    Raises:
        DataError: one line: a missing column or split, an unreadable source, or
            (strict) the first row that does not convert.
    """
    own, log = log is None, log or RecordLog()
    source = str(source)
    ds = _open(source, split)
    have = set(ds.column_names)
    col = {f: (columns or {}).get(f, f) for f in QA_FIELDS + CORPUS_FIELDS}
    present = {f for f, c in col.items() if c.split(".")[0] in have}
    for f, c in (columns or {}).items():
        if f not in present:
            raise DataError(f"{source}: no column '{c.split('.')[0]}' (columns: {', '.join(sorted(have))})")
    corpus, qids, examples = Corpus(), UniqueIds(), []
    is_corpus = "question" not in present and "text" in present
    missing = [] if is_corpus else [f for f in ("question", "answers") if f not in present]
    if missing:
        raise DataError(
            f"{source}: no column for {', '.join(missing)} (a QA set) or text (a corpus) "
            f"(columns: {', '.join(sorted(have))}); map yours with --columns FIELD=COLUMN"
        )
    for i, row in enumerate(ds):
        where = f"{source}: row {i}"
        get = lambda f: _get(row, col[f], where) if f in present else None  # noqa: E731
        try:
            title = text_of(get("title"), col["title"], required=False)
            if is_corpus:  # the corpus contract: a title-only passage is kept, one with neither is not
                text, pid = text_of(get("text"), col["text"], required=False), id_of(get("id"), col["id"])
                if not text.strip() and not title.strip():
                    raise BadRecord("passage has neither title nor text")
            else:
                question = text_of(get("question"), col["question"])
                answers = get("answers")
                answers = answers_of(
                    answers["text"] if isinstance(answers, dict) and "text" in answers else answers, col["answers"]
                )
                qid, gold = id_of(get("id"), col["id"]), _ids(get("gold_ids"), col["gold_ids"])
                contexts = _texts(get("context"), col["context"]) if "context" in present else ()
        except BadRecord as exc:
            log.skip(where, str(exc))
            continue
        if is_corpus:
            new, renamed = corpus.add(pid or stable_id(title, text), title, text)
            if renamed:
                log.rename(where, f"repeated id '{pid}' with other text (written as '{new}')")
            continue
        ids = [corpus.add(stable_id(title, c), title, c)[0] for c in contexts]  # content-addressed: no clashes
        examples.append(
            Example(id=take_qid(qids, qid, str(i), where, log), question=question, answers=answers, gold_ids=gold or tuple(ids))
        )
    if own:
        log.warn()
    return corpus.passages(), examples
