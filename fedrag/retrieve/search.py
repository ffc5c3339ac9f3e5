"""One search interface over dense, BM25 and hybrid retrieval, selectable per run."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fedrag._settings import check_choice
from fedrag.data.types import Passage
from fedrag.retrieve.choices import MODES, TOP_K, IndexRefresh, Retrieval  # noqa: F401 - their old home
from fedrag.retrieve.sparse import BM25Index, reciprocal_rank_fusion
from fedrag.retrieve.store import KnowledgeStore

# candidates a stale index returns per hit wanted, re-ranked with fresh passage embeddings
# (Atlas' "re-ranking" refresh, Izacard et al. 2022)
RERANK_DEPTH = 4


def resolve_refresh(refresh: str, federated: bool) -> str:
    """`auto`: re-embed the store after each phase centrally, re-rank on federated sites
    (a round's cost then does not grow with the site's store)."""
    if refresh == "auto":
        return "rerank" if federated else "phase"
    return refresh


@dataclass(frozen=True)
class Hit:
    """A retrieved passage and its retrieval score (cosine for dense, BM25 or RRF otherwise)."""

    passage: Passage
    score: float


class Searcher:
    """Top-k passages for a batch of questions with the chosen retrieval `mode`.

    `hybrid` fuses dense and BM25 rankings (each `depth` deep, default `4k`)
    with reciprocal rank fusion.

    `refresh` is what happens when a shared encoder trained and the store's embeddings
    are stale ([`fedrag.rag.RAGSystem.sync_store`][fedrag.rag.RAGSystem.sync_store]): `phase`
    re-embeds the whole store; `rerank` keeps it and, while `stale`, re-ranks each
    query's top `RERANK_DEPTH * k` candidates by passages embedded afresh.
    """

    def __init__(self, store: KnowledgeStore, retriever=None, mode: str = "dense", refresh: str = "phase"):
        check_choice(mode, Retrieval, "retrieval mode", ValueError)
        if mode != "bm25" and retriever is None:
            raise ValueError(f"retrieval mode '{mode}' needs a dense retriever")
        if refresh not in ("phase", "rerank"):
            raise ValueError(f"index refresh must be phase or rerank, got '{refresh}'")
        self.store, self.retriever, self.mode, self.refresh = store, retriever, mode, refresh
        self.stale = False
        self.timing = {"encode_s": 0.0, "search_s": 0.0, "queries": 0}  # dense retrieval, accumulated
        self._bm25 = BM25Index(store.passages) if mode != "dense" else None

    def positions(self, questions: list[str], k: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "bm25":
            return self._bm25.search(questions, k)
        dense = self._dense(questions, k if self.mode == "dense" else (depth or 4 * k))
        if self.mode == "dense":
            return dense
        sparse = self._bm25.search(questions, depth or 4 * k)
        return reciprocal_rank_fusion([dense[1], sparse[1]], min(k, len(self.store)))

    def _dense(self, questions: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        q = self.retriever.encode_queries(questions)
        t1 = time.perf_counter()
        try:
            return self._search(q, k)
        finally:
            t2 = time.perf_counter()
            self.timing["encode_s"] += t1 - t0
            self.timing["search_s"] += t2 - t1
            self.timing["queries"] += len(questions)

    def _search(self, q, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.stale:
            return self.store.search(q, k)
        _, cand = self.store.search(q, RERANK_DEPTH * k)
        texts = [self.store.passages[p].as_text() for p in cand.reshape(-1)]
        fresh = torch.from_numpy(self.retriever.encode_passages(texts)).view(*cand.shape, -1)
        top = torch.einsum("bd,bkd->bk", q.detach().float().cpu(), fresh).topk(min(k, cand.shape[1]), dim=1)
        return top.values.numpy(), np.take_along_axis(cand, top.indices.numpy(), axis=1)

    def search(self, questions: list[str], k: int) -> list[list[Hit]]:
        scores, pos = self.positions(questions, k)
        return [[Hit(self.store.passages[p], float(s)) for s, p in zip(srow, prow) if p >= 0] for srow, prow in zip(scores, pos)]
