"""RAG system: retrieve top-k, then generate with the decoding that matches training; batched."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from fedrag.generate.decoding import GenerationSettings, rag_sequence_decode, rag_token_decode
from fedrag.retrieve.choices import TOP_K
from fedrag.retrieve.search import Hit, Searcher


@dataclass
class RAGOutput:
    question: str
    answer: str | None
    passage_ids: list[str]
    scores: list[float]
    retrieve_s: float = 0.0
    generate_s: float = 0.0
    hits: list[Hit] = field(default_factory=list, repr=False)


class RAGSystem:
    """`searcher` finds passages; `generator` (optional) answers from the top `top_k`
    with `settings` (decoding `concat` | `rag-sequence` | `rag-token` and the
    generation options, [`GenerationSettings`][fedrag.generate.decoding.GenerationSettings])."""

    def __init__(self, searcher: Searcher, generator=None, top_k: int = TOP_K, settings: GenerationSettings | None = None):
        self.searcher, self.generator, self.top_k = searcher, generator, top_k
        self.settings = settings or GenerationSettings()

    @property
    def store(self):
        return self.searcher.store

    @property
    def retriever(self):
        return self.searcher.retriever

    def reencode_store(self) -> dict:
        """Swap in the store re-embedded by the (trained) passage encoder; returns the cost."""
        t0 = time.perf_counter()
        self.searcher.store = self.store.reencoded(self.retriever)
        self.searcher.stale = False
        return {"reencode_s": time.perf_counter() - t0, "reencoded_passages": len(self.store)}

    def sync_store(self) -> dict | None:
        """Follow a shared encoder (trained on the passage side) that changed since the
        store was embedded: re-embed the store (the searcher's `refresh` is `phase`;
        returns the cost) or mark it stale, so searches re-rank its candidates with fresh
        passage embeddings (`rerank`: a cost independent of the store's size). Returns
        None when nothing was re-embedded."""
        if self.retriever is None or not self.retriever.shared:
            return None
        if self.store.fingerprint == self.retriever.passage_fingerprint():
            self.searcher.stale = False
            return None
        if self.searcher.refresh == "rerank":
            self.searcher.stale = True
            return None
        return self.reencode_store()

    def retrieve(self, questions: list[str], k: int | None = None) -> list[list[Hit]]:
        return self.searcher.search(questions, k or self.top_k)

    def answer(self, questions: list[str], k: int | None = None, batch_size: int = 8) -> list[RAGOutput]:
        """Answer a batch: retrieve `max(k, top_k)` hits per question (`k` for
        retrieval metrics), then decode from the first `top_k`."""
        t0 = time.perf_counter()
        hits = self.retrieve(questions, max(k or self.top_k, self.top_k))
        t1 = time.perf_counter()
        answers: list[str | None] = [None] * len(questions)
        if self.generator is not None:
            answers = self.decode(questions, [hs[: self.top_k] for hs in hits], batch_size)
        t2 = time.perf_counter()
        n = max(1, len(questions))
        return [
            RAGOutput(q, a, [h.passage.id for h in hs], [h.score for h in hs], (t1 - t0) / n, (t2 - t1) / n, hs)
            for q, a, hs in zip(questions, answers, hits)
        ]

    def decode(self, questions: list[str], hits: list[list[Hit]], batch_size: int = 8) -> list[str]:
        """Answers from the given passages with `self.settings.decoding`."""
        gen, s = self.generator, self.settings
        if s.decoding == "concat":
            prompts = [gen.prompt(q, [h.passage for h in hs]) for q, hs in zip(questions, hits)]
            return gen.generate(prompts, batch_size=batch_size, settings=s)
        k = min(len(hs) for hs in hits)
        per_passage = [[gen.prompt(q, [h.passage]) for h in hs[:k]] for q, hs in zip(questions, hits)]
        scores = torch.tensor([[h.score for h in hs[:k]] for hs in hits], dtype=torch.float32)
        if s.decoding == "rag-sequence":
            return rag_sequence_decode(gen, per_passage, scores, s, batch_size=batch_size)
        out = []
        step = max(1, batch_size // k)  # B·k rows per forward
        for i in range(0, len(questions), step):
            out += rag_token_decode(gen, per_passage[i : i + step], scores[i : i + step], s)
        return out
