"""How much an approximate index loses: its top-k against exact search on the same vectors.

Exact search here is numpy's matrix product over the stored embeddings, chunk by chunk
(a memory-mapped store is read once), independent of FAISS, so a wrong index setting
cannot agree with itself.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 65536


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions `[n, k]` of the `k` highest inner products, best first."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_p = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(embeddings), _CHUNK):
        block = np.asarray(embeddings[start : start + _CHUNK], dtype=np.float32)
        s = np.concatenate([best_s, q @ block.T], axis=1)
        p = np.concatenate([best_p, np.broadcast_to(np.arange(start, start + len(block)), (len(q), len(block)))], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_p = np.take_along_axis(s, keep, 1), np.take_along_axis(p, keep, 1)
    return best_p


def recall_vs_exact(store, queries: np.ndarray, k: int = 5) -> float:
    """Mean share of exact search's top-`k` that `store`'s index returns in its top-`k`."""
    k = min(k, len(store))
    exact = exact_top_k(store.embeddings, queries, k)
    _, approx = store.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx.tolist(), exact.tolist())]))


def probe_recall(store, k: int = 5, probes: int = 500, seed: int = 0) -> dict:
    """Recall@k of the index against exact search with `probes` stored passages as queries
    (what a build can measure without questions; `fedrag eval` measures it on questions)."""
    rows = np.sort(np.random.default_rng(seed).choice(len(store), min(probes, len(store)), replace=False))
    queries = np.asarray(store.embeddings[rows], dtype=np.float32)
    return {"k": k, "recall": round(recall_vs_exact(store, queries, k), 4), "probes": len(rows), "queries": "stored passages"}
