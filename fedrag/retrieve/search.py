"""One search interface over dense, BM25 and hybrid retrieval, selectable per run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrag.data.types import Passage
from fedrag.retrieve.sparse import BM25Index, reciprocal_rank_fusion
from fedrag.retrieve.store import KnowledgeStore

MODES = ("dense", "bm25", "hybrid")


@dataclass(frozen=True)
class Hit:
    """A retrieved passage and its retrieval score (cosine for dense, BM25 or RRF otherwise)."""

    passage: Passage
    score: float


class Searcher:
    """Top-k passages for a batch of questions with the chosen retrieval `mode`.

    `hybrid` fuses dense and BM25 rankings (each `depth` deep, default `4k`)
    with reciprocal rank fusion.
    """

    def __init__(self, store: KnowledgeStore, retriever=None, mode: str = "dense"):
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, got '{mode}'")
        if mode != "bm25" and retriever is None:
            raise ValueError(f"retrieval mode '{mode}' needs a dense retriever")
        self.store, self.retriever, self.mode = store, retriever, mode
        self._bm25 = BM25Index(store.passages) if mode != "dense" else None

    def positions(self, questions: list[str], k: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "bm25":
            return self._bm25.search(questions, k)
        dense = self.store.search(self.retriever.encode_queries(questions), k if self.mode == "dense" else (depth or 4 * k))
        if self.mode == "dense":
            return dense
        sparse = self._bm25.search(questions, depth or 4 * k)
        return reciprocal_rank_fusion([dense[1], sparse[1]], min(k, len(self.store)))

    def search(self, questions: list[str], k: int) -> list[list[Hit]]:
        scores, pos = self.positions(questions, k)
        return [[Hit(self.store.passages[p], float(s)) for s, p in zip(srow, prow) if p >= 0] for srow, prow in zip(scores, pos)]
