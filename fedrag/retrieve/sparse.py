"""Sparse (BM25 via `bm25s`) and hybrid (reciprocal rank fusion) retrieval."""

from __future__ import annotations

import numpy as np

from fedrag.data.types import Passage


class BM25Index:
    """BM25 over passage texts (title + text), English stopwords, bm25s defaults."""

    def __init__(self, passages: list[Passage]):
        import bm25s

        self._bm25s = bm25s
        self.size = len(passages)
        self.model = bm25s.BM25()
        self.model.index(
            bm25s.tokenize([p.as_text() for p in passages], stopwords="en", show_progress=False), show_progress=False
        )

    def search(self, questions: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(scores [n, k'], positions [n, k'])`, `k' = min(k, size)`."""
        k = min(k, self.size)
        tokens = self._bm25s.tokenize(questions, stopwords="en", show_progress=False)
        pos, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return np.asarray(scores, dtype=np.float32), np.asarray(pos, dtype=np.int64)


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int, c: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Fuse per-query rankings: `score(d) = sum_r 1 / (c + rank_r(d))` (rank from 1).

    `rankings` is a list of `[n, depth]` position arrays (one per retriever).
    Returns `(scores [n, k], positions [n, k])` sorted by fused score.
    """
    n = rankings[0].shape[0]
    out_pos = np.full((n, k), -1, dtype=np.int64)
    out_score = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, pos in enumerate(ranking[i], 1):
                if pos >= 0:
                    fused[int(pos)] = fused.get(int(pos), 0.0) + 1.0 / (c + rank)
        best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out_pos[i, : len(best)] = [b[0] for b in best]
        out_score[i, : len(best)] = [b[1] for b in best]
    return out_score, out_pos
