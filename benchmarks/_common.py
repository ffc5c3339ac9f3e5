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
