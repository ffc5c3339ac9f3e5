"""Converters from public QA formats to fedrag's (corpus, examples) pair.

Each converter returns `(passages, examples)` with gold passage ids filled in, so
that retrieval can be scored. Write them out with [`fedrag.data.write_jsonl`][fedrag.data.write_jsonl]
(or `fedrag convert`) to get the generic JSONL contract.

Every record is checked against its format's schema: text fields are strings (a null is
no value, never the text `"None"`), required ones non-empty; answers are a non-empty
list of non-empty strings (a bare string is one answer, never its characters). A record
that fails is skipped and counted in `log` (`RecordLog(strict=True)` refuses it
instead; without a `log` the count is a one-line warning on stderr). A file whose
structure is not the format fails whole. Ids are unique: where the source repeats an id
the later record becomes `ID#2` (`#3`, ...), the same in every run, and is counted.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from fedrag.data.fields import MISSING, BadRecord, Corpus, UniqueIds, answers_of, id_of, stable_id, take_qid, text_of
from fedrag.data.jsonl import iter_json_lines
from fedrag.data.types import Example, Passage, RecordLog
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
    """A converter whose input lacks a structural field (or has one of the wrong type)
    fails with one line naming the file and the format, not a KeyError. Records are
    checked one by one inside the converter; their problems go to `log`."""

    def wrap(fn):
        @functools.wraps(fn)
        def converter(path, *args, log: RecordLog | None = None, **kwargs):
            own, log = log is None, log or RecordLog()
            try:
                out = fn(path, *args, log=log, **kwargs)
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                what = f"missing field {exc}" if isinstance(exc, KeyError) else f"unexpected structure ({exc})"
                raise DataError(f"{path}: not a valid {fmt} file: {what}") from None
            if own:
                log.warn()
            return out

        return converter

    return wrap


@_schema("SQuAD")
def squad(path: str | os.PathLike, skip_unanswerable: bool = True, *, log: RecordLog | None = None) -> Converted:
    """SQuAD v1.1 / v2.0 JSON. Passage id `<title>#<n>`, n counting the paragraphs of
    every article with that title (two articles of one title get distinct ids); each
    example's gold is its paragraph. Questions marked `is_impossible` (v2.0) are left
    out unless `skip_unanswerable` is False; other questions need answers."""
    data = _load_json(path)
    if not isinstance(data, dict) or "data" not in data:
        raise DataError(f"{path}: not a SQuAD file (no top-level 'data')")
    passages, examples, qids, n_of_title = [], [], UniqueIds(), {}
    for a, article in enumerate(data["data"]):
        paragraphs = article["paragraphs"]
        try:
            raw = text_of(article.get("title", MISSING), "title", required=False)
        except BadRecord as exc:
            log.skip(f"{path}: data[{a}]", str(exc), n=sum(1 + len(p["qas"]) for p in paragraphs))
            continue
        for i, para in enumerate(paragraphs):
            n_of_title[raw] = n = n_of_title.get(raw, -1) + 1
            pid, where, qas = f"{raw}#{n}", f"{path}: data[{a}].paragraphs[{i}]", para["qas"]
            try:
                context = text_of(para.get("context", MISSING), "context")
            except BadRecord as exc:
                log.skip(where, f"{exc} (left out with its {len(qas)} question{'s' * (len(qas) != 1)})", n=1 + len(qas))
                continue
            passages.append(Passage(id=pid, title=raw.replace("_", " "), text=context))
            for j, qa in enumerate(qas):
                try:
                    if not isinstance(qa, dict):
                        raise BadRecord(f"a question is {type(qa).__name__}, expected an object")
                    question, qid = text_of(qa.get("question", MISSING), "question"), id_of(qa.get("id", MISSING))
                    if qid is None:
                        raise BadRecord("'id' is missing")
                    raw_answers = qa.get("answers", MISSING)
                    if qa.get("is_impossible") and not raw_answers:
                        if skip_unanswerable:
                            log.unanswerable += 1
                            continue
                        answers = ("",)
                    else:
                        if isinstance(raw_answers, list):  # [{"text": ..., "answer_start": ...}]
                            raw_answers = [x.get("text") if isinstance(x, dict) else x for x in raw_answers]
                        answers = answers_of(raw_answers)
                except BadRecord as exc:
                    log.skip(f"{where}.qas[{j}]", str(exc))
                    continue
                qid = take_qid(qids, qid, qid, f"{where}.qas[{j}]", log)
                examples.append(Example(id=qid, question=question, answers=answers, gold_ids=(pid,)))
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
def nq_open(path: str | os.PathLike, *, log: RecordLog | None = None) -> Converted:
    """NQ-open JSONL(.gz) with retrieved `ctxs` (the lost-in-the-middle format).
    Gold = contexts flagged `isgold` (else `hasanswer`); the corpus is the union of
    ctxs. A ctx without text is skipped (it holds no evidence), as is a line whose
    question or answers do not convert; `answers` may be one bare string."""
    corpus, qids, examples = Corpus(), UniqueIds(), []
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        try:
            question, answers = text_of(obj.get("question", MISSING), "question"), answers_of(obj.get("answers", MISSING))
            qid, ctxs = id_of(obj.get("id", MISSING)), obj.get("ctxs") or []
            if not isinstance(ctxs, list):
                raise BadRecord(f"'ctxs' is {type(ctxs).__name__}, expected a list")
        except BadRecord as exc:
            log.skip(where, str(exc))
            continue
        gold = []
        for j, ctx in enumerate(ctxs):
            try:
                if not isinstance(ctx, dict):
                    raise BadRecord(f"is {type(ctx).__name__}, expected an object")
                text, title = text_of(ctx.get("text", MISSING), "text"), text_of(ctx.get("title", MISSING), "title", False)
                cid = id_of(ctx.get("id", MISSING))
            except BadRecord as exc:
                log.skip(f"{where}: ctxs[{j}]", str(exc))
                continue
            pid, renamed = corpus.add(cid or f"{title}#{stable_id(title, text)}", title, text)
            if renamed:
                log.rename(f"{where}: ctxs[{j}]", f"repeated id '{cid}' with other text (written as '{pid}')")
            if ctx.get("isgold") or (ctx.get("hasanswer") and "isgold" not in ctx):
                gold.append(pid)
        qid = take_qid(qids, qid, str(lineno), where, log)
        examples.append(Example(id=qid, question=question, answers=answers, gold_ids=tuple(dict.fromkeys(gold))))
    return corpus.passages(), examples


@_schema("HotpotQA")
def hotpotqa(path: str | os.PathLike, *, log: RecordLog | None = None) -> Converted:
    """HotpotQA distractor setting: the official JSON (`context` as [[title, sents]])
    or the Hugging Face schema (`context` as {title: [...], sentences: [[...]]}).
    A paragraph's id is its title (`Title#2` for the same title with other text);
    gold ids are the titles in `supporting_facts` that the question's context has."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of HotpotQA questions")
    corpus, qids, examples = Corpus(), UniqueIds(), []
    for n, q in enumerate(data):
        where, ctx, sf = f"{path}: [{n}]", q["context"], q["supporting_facts"]
        try:
            question, answers = text_of(q.get("question", MISSING), "question"), answers_of(q.get("answer", MISSING), "answer")
            qid = id_of(q.get("id", q.get("_id", MISSING)))
        except BadRecord as exc:
            log.skip(where, str(exc))
            continue
        pid_of = {}
        pairs = zip(ctx["title"], ctx["sentences"]) if isinstance(ctx, dict) else ((c[0], c[1]) for c in ctx)
        for k, (title, sents) in enumerate(pairs):
            try:
                title = text_of(title, "title")
                if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
                    raise BadRecord(f"the sentences of '{title}' are not a list of texts")
                if not "".join(sents).strip():
                    raise BadRecord(f"paragraph '{title}' is empty")
            except BadRecord as exc:
                log.skip(f"{where}.context[{k}]", str(exc))
                continue
            # the id is derived from the title, not given by the source: a new one is no source error
            pid_of[title], _ = corpus.add(title, title, "".join(sents).strip())
        gold = sf["title"] if isinstance(sf, dict) else [f[0] for f in sf]
        qid = take_qid(qids, qid, str(n), where, log)
        examples.append(
            Example(
                id=qid, question=question, answers=answers, gold_ids=tuple(dict.fromkeys(pid_of[t] for t in gold if t in pid_of))
            )
        )
    return corpus.passages(), examples


FORMATS = {"squad": squad, "nq-open": nq_open, "hotpotqa": hotpotqa}
