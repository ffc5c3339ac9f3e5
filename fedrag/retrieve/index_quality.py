"""How much an approximate index loses: its top-k against exact search on the same vectors.

Exact search here is numpy's matrix product over the stored embeddings, chunk by chunk
(a memory-mapped store is read once), independent of FAISS, so a wrong index setting
cannot agree with itself.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 16384  # rows scored at a time: 500 queries x 16,384 x 4 bytes = 33 MB


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions `[n, k]` of the `k` highest inner products, best first (ties: lower position)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_p = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(embeddings), _CHUNK):
        block = np.asarray(embeddings[start : start + _CHUNK], dtype=np.float32)
        scores = q @ block.T
        top = min(k, scores.shape[1])
        part = np.argpartition(-scores, top - 1, axis=1)[:, :top]  # the chunk's k best, unordered
        s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        p = np.concatenate([best_p, part + start], axis=1)
        keep = np.lexsort((p, -s), axis=1)[:, :k]  # by score, then by position
        best_s, best_p = np.take_along_axis(s, keep, 1), np.take_along_axis(p, keep, 1)
    return best_p


def recall_vs_exact(store, queries: np.ndarray, k: int = 5, own: np.ndarray | None = None) -> float:
    """Mean share of exact search's top-`k` that `store`'s index returns in its top-`k`;
    `own[i]`: a position left out of query `i`'s lists (the stored passage it is)."""
    k = min(k, len(store) - (own is not None))
    extra = int(own is not None)
    exact = exact_top_k(store.embeddings, queries, k + extra)
    _, approx = store.search(np.ascontiguousarray(queries, dtype=np.float32), k + extra)
    skip = own if own is not None else np.full(len(queries), -2)
    shares = [
        len(set([x for x in a if x != s][:k]) & set([x for x in e if x != s][:k])) / k
        for a, e, s in zip(approx.tolist(), exact.tolist(), skip.tolist())
    ]
    return float(np.mean(shares))


def probe_recall(store, k: int = 5, probes: int = 500, seed: int = 0) -> dict:
    """Recall@k of the index against exact search with `probes` stored passages as queries,
    each passage's own position left out (its `k` nearest other passages: a passage finds
    itself too easily to tell anything). What a build can measure without questions;
    `benchmarks/store_scale.py` measures answer-recall on questions."""
    rows = np.sort(np.random.default_rng(seed).choice(len(store), min(probes, len(store)), replace=False))
    queries = np.asarray(store.embeddings[rows], dtype=np.float32)
    recall = recall_vs_exact(store, queries, k, own=rows)
    return {"k": k, "recall": round(recall, 4), "probes": len(rows), "queries": "stored passages' nearest others"}
