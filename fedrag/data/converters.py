"""Converters from public QA formats to fedrag's (corpus, examples) pair.

Each converter returns ``(passages, examples)`` with gold passage ids filled in, so
that retrieval can be scored. Write them out with :func:`fedrag.data.write_jsonl`
(or ``fedrag convert``) to get the generic JSONL contract.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from fedrag.data.jsonl import iter_json_lines
from fedrag.data.types import Example, Passage
from fedrag.errors import DataError

Converted = tuple[list[Passage], list[Example]]


def _load_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); expected a JSON file") from None


def _schema(fmt: str):
    """A converter whose input lacks a field (or has one of the wrong type) fails with
    one line naming the file and the format, not a KeyError."""

    def wrap(fn):
        @functools.wraps(fn)
        def converter(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                what = f"missing field {exc}" if isinstance(exc, KeyError) else f"unexpected structure ({exc})"
                raise DataError(f"{path}: not a valid {fmt} file: {what}") from None

        return converter

    return wrap


def stable_id(*parts: str) -> str:
    """A short id that is the same in every run (unlike the salted built-in ``hash``)."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:10]


@_schema("SQuAD")
def squad(path: str | os.PathLike, skip_unanswerable: bool = True) -> Converted:
    """SQuAD v1.1 / v2.0 JSON. Passage id ``<title>#<paragraph index>``; each example
    is tagged with its article title in the id prefix so callers can split by article."""
    data = _load_json(path)
    if not isinstance(data, dict) or "data" not in data:
        raise DataError(f"{path}: not a SQuAD file (no top-level 'data')")
    passages, examples = [], []
    for article in data["data"]:
        title = article.get("title", "").replace("_", " ")
        for i, para in enumerate(article["paragraphs"]):
            pid = f"{article.get('title', '')}#{i}"
            passages.append(Passage(id=pid, title=title, text=para["context"]))
            for qa in para["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
                if not answers:
                    if skip_unanswerable:
                        continue
                    answers = ("",)
                examples.append(Example(id=qa["id"], question=qa["question"], answers=answers, gold_ids=(pid,)))
    return passages, examples


def split_by_title(examples: list[Example], passages: list[Passage], test_fraction: float = 0.2, seed: int = 0):
    """Split examples by the title of their gold passage (no article in both splits)."""
    import random

    title_of = {p.id: p.title or p.id for p in passages}  # untitled passages are their own group
    titles = sorted({title_of[e.gold_ids[0]] for e in examples if e.gold_ids})
    random.Random(seed).shuffle(titles)
    test_titles = set(titles[: max(1, round(len(titles) * test_fraction))])
    train = [e for e in examples if title_of.get(e.gold_ids[0] if e.gold_ids else "") not in test_titles]
    test = [e for e in examples if e not in train]
    return train, test


@_schema("NQ-open")
def nq_open(path: str | os.PathLike) -> Converted:
    """NQ-open JSONL(.gz) with retrieved ``ctxs`` (the lost-in-the-middle format).
    Gold = contexts flagged ``isgold`` (else ``hasanswer``); the corpus is the union of ctxs."""
    passages: dict[str, Passage] = {}
    examples = []
    for lineno, obj in iter_json_lines(path):
        if "question" not in obj or "answers" not in obj:
            raise DataError(f"{path}:{lineno}: expected 'question' and 'answers'")
        gold = []
        for j, ctx in enumerate(obj.get("ctxs", [])):
            if not str(ctx.get("text", "")).strip():
                continue  # an empty passage cannot be indexed
            pid = str(ctx.get("id") or f"{ctx.get('title', '')}#{stable_id(ctx.get('title', ''), ctx['text'])}")
            passages.setdefault(pid, Passage(id=pid, title=ctx.get("title", ""), text=ctx.get("text", "")))
            if ctx.get("isgold") or (ctx.get("hasanswer") and "isgold" not in ctx):
                gold.append(pid)
        examples.append(
            Example(id=str(obj.get("id", lineno)), question=obj["question"], answers=tuple(obj["answers"]), gold_ids=tuple(gold))
        )
    return list(passages.values()), examples


@_schema("HotpotQA")
def hotpotqa(path: str | os.PathLike) -> Converted:
    """HotpotQA distractor setting: the official JSON (``context`` as [[title, sents]])
    or the Hugging Face schema (``context`` as {title: [...], sentences: [[...]]}).
    A paragraph's id is its title; gold ids are the titles in ``supporting_facts``."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of HotpotQA questions")
    passages: dict[str, Passage] = {}
    examples = []
    for n, q in enumerate(data):
        ctx, sf = q["context"], q["supporting_facts"]
        pairs = zip(ctx["title"], ctx["sentences"]) if isinstance(ctx, dict) else ((c[0], c[1]) for c in ctx)
        for title, sents in pairs:
            passages.setdefault(title, Passage(id=title, title=title, text="".join(sents).strip()))
        gold = sf["title"] if isinstance(sf, dict) else [f[0] for f in sf]
        examples.append(
            Example(
                id=str(q.get("id", q.get("_id", n))),
                question=q["question"],
                answers=(q["answer"],),
                gold_ids=tuple(dict.fromkeys(gold)),
            )
        )
    return list(passages.values()), examples


FORMATS = {"squad": squad, "nq-open": nq_open, "hotpotqa": hotpotqa}
