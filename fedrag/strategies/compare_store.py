"""A comparison's folder: what identifies it (settings and the content of its inputs), the
per-strategy results and per-question rows that let it resume, and the question-by-question
pairing of strategies."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fedrag._io import MARKER, atomic_write_json, atomic_write_text
from fedrag._settings import names, setting
from fedrag.errors import FedragError
from fedrag.evaluate.metrics import paired_sign_test
from fedrag.strategies.verdicts import by_question
from fedrag.train.config import VAL_LIMIT


def fingerprint(items) -> str:
    """SHA-256 of passages or examples as JSON: their content, not the path they came from."""
    import hashlib

    h = hashlib.sha256()
    for item in items or ():
        h.update(json.dumps(item.to_dict(), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


@dataclass
class CompareInputs:
    """A comparison's inputs as given (`CompareSettings.data`): where they were read from and how many questions."""

    corpus: str = setting("", "corpus JSONL", path=True)
    train: str = setting("", "training QA JSONL", path=True)
    test: str = setting("", "test QA JSONL", path=True)
    val: str | None = setting(None, "validation QA JSONL", path=True)
    limit: int | None = setting(None, "training questions used")
    test_limit: int | None = setting(None, "test questions used")
    val_limit: int | None = setting(VAL_LIMIT, "validation questions used (--search)")
    sampling: str = setting("evenly-spaced", "how a limit picks its questions")


# where the inputs were read from: a rerun may name them differently (their content is fingerprinted)
PATHS = names(CompareInputs, path=True)


def identity(settings, passages, train, test, val) -> dict:
    """What a resumed comparison must match: the settings (a `CompareSettings`, less those declared
    `identity=False`; paths as typed excluded) and the content of every input, so rows scored on
    other questions are never paired."""
    reported = names(type(settings), identity=False)
    ran = {k: v for k, v in json.loads(json.dumps(asdict(settings))).items() if k not in reported}
    return {
        **ran,
        "data": {k: v for k, v in settings.data.items() if k not in PATHS},
        "inputs": {
            "corpus": fingerprint(passages),
            "train": fingerprint(train),
            "test": fingerprint(test),
            "val": fingerprint(val) if val else None,
        },
    }


def check_resume(out: Path, wanted: dict, log=print, *, reported: tuple[str, ...] = ()) -> None:
    """Refuse `out` if it holds a comparison of other settings or data (naming what
    differs); otherwise mark it as this comparison's, announcing a resume. `reported`:
    the settings left out of `wanted` (an older comparison may have recorded them)."""
    marker = out / MARKER
    if marker.is_file():
        had = json.loads(marker.read_text())
        old = had.get("identity") if had.get("kind") == "compare" else None
        if old:  # a comparison written when these keys were part of its identity
            old = {k: v for k, v in old.items() if k not in reported}
        if old != wanted:
            diff = _differs(old or {}, wanted)
            raise FedragError(
                f"{out} holds a comparison with other settings or data (differs in {', '.join(diff)}); "
                "pass --overwrite to start over, or choose another --out"
            )
        log(f"compare: resuming in {out}")
    elif any(p for p in out.iterdir() if p.name != "tracking"):
        raise FedragError(f"{out} is not empty and holds no comparison; choose another --out")
    atomic_write_json(marker, {"kind": "compare", "identity": wanted})


def _differs(old: dict, new: dict) -> list[str]:
    """The keys whose values differ, one level of nesting spelled `outer.inner`."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{k}.{j}" for j in sorted(set(a) | set(b)) if a.get(j) != b.get(j)]
        elif a != b:
            keys.append(k)
    return keys


def paired(out: Path, rows: list[dict]) -> dict:
    """Per strategy, EM and F1 question by question against the untuned pipeline and
    against the strategy with the best F1: `{name: {"vs_untuned": {"em": [gained, lost, p],
    "f1": [...], "n": paired, "left_out": m}, "vs_best": {...}}}`. Questions are paired
    by id ([`by_question`][fedrag.strategies.verdicts.by_question]), never by row order:
    only those both strategies answered count (`n`), `left_out` says how many only one
    of them holds. Strategies whose rows were not saved are left out."""
    scores = {r["strategy"]: question_rows(out, r["strategy"]) for r in rows}
    scores = {k: v for k, v in scores.items() if v}
    trained = [r for r in rows if r["strategy"] != "untuned" and r["strategy"] in scores]
    best = max(trained, key=lambda r: r.get("f1", 0.0))["strategy"] if trained else None
    result = {}
    for r in trained:
        name, one = r["strategy"], {}
        for label, ref in (("vs_untuned", "untuned"), ("vs_best", best)):
            if ref in scores and ref != name:
                one[label] = {}
                for key in ("em", "f1"):
                    before, after, left = by_question(scores[ref], scores[name], key)
                    one[label][key] = list(paired_sign_test(before, after))
                one[label].update(n=len(before), left_out=left)
        result[name] = {"best": best, **one}
    return result


def question_rows(out: Path, name: str) -> list[dict] | None:
    """A finished strategy's per-question scores (`None` if it has none saved).

    Raises:
        FedragError: a row without its question id (it could not be paired).
    """
    path = out / "strategies" / f"{name}.rows.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, q in enumerate(rows, 1):
        if "id" not in q:
            raise FedragError(
                f"{path}:{i}: a per-question row without its question id cannot be paired; "
                f"delete {path.name} and {name}.json to score {name} again"
            )
    return rows


def cached_row(out: Path, name: str) -> dict | None:
    """A finished strategy's result row (`None` if it has not finished)."""
    path = out / "strategies" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_row(out: Path, name: str, row_and_questions: tuple[dict, list[dict]]) -> dict:
    """Save a strategy's per-question scores, then its row (which marks it finished); returns the row."""
    row, questions = row_and_questions  # the rows first: a strategy's JSON marks it finished
    atomic_write_text(out / "strategies" / f"{name}.rows.jsonl", "".join(json.dumps(q) + "\n" for q in questions))
    atomic_write_json(out / "strategies" / f"{name}.json", row)
    return row
