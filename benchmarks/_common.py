"""Shared helpers for the benchmark scripts (run them from the repo root)."""

from __future__ import annotations

import statistics
import time

from fedrag._env import apply_defaults

apply_defaults()


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def table(headers: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def load_corpus_arg(path: str | None, limit: int | None):
    """Passages from a SQuAD JSON (``--squad``) or, without one, the built-in demo corpus."""
    from fedrag.data import converters, demo

    if path:
        passages, examples = converters.squad(path)
    else:
        passages, train, test = demo.generate()
        examples = train + test
    return passages[:limit] if limit else passages, examples


def squad_split(path: str, out) -> tuple[list, list, list, str]:
    """SQuAD JSON → (passages, train, test, corpus path): all paragraphs as the corpus (written
    to ``out``/corpus.jsonl), questions split by article, the split every SQuAD benchmark uses."""
    from pathlib import Path

    from fedrag.data import converters, write_jsonl

    passages, examples = converters.squad(path)
    train, test = converters.split_by_title(examples, passages, test_fraction=0.2, seed=0)
    corpus = Path(out) / "corpus.jsonl"
    write_jsonl(corpus, passages)
    return passages, train, test, str(corpus)
