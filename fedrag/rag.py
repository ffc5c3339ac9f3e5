"""RAG system: retrieve top-k, then generate; batched."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
    """``searcher`` finds passages; ``generator`` (optional) answers from the top ``top_k``."""

    def __init__(self, searcher: Searcher, generator=None, top_k: int = 3, context_k: int | None = None):
        self.searcher, self.generator, self.top_k = searcher, generator, top_k
        self.context_k = context_k or top_k

    @property
    def store(self):
        return self.searcher.store

    @property
    def retriever(self):
        return self.searcher.retriever

    def retrieve(self, questions: list[str], k: int | None = None) -> list[list[Hit]]:
        return self.searcher.search(questions, k or self.top_k)

    def answer(self, questions: list[str], k: int | None = None, batch_size: int = 8) -> list[RAGOutput]:
        """Answer a batch: retrieval for all questions, then batched greedy generation."""
        t0 = time.perf_counter()
        hits = self.retrieve(questions, max(k or self.top_k, self.context_k))
        t1 = time.perf_counter()
        answers: list[str | None] = [None] * len(questions)
        if self.generator is not None:
            prompts = [self.generator.prompt(q, [h.passage for h in hs[: self.context_k]]) for q, hs in zip(questions, hits)]
            answers = self.generator.generate(prompts, batch_size=batch_size)
        t2 = time.perf_counter()
        n = max(1, len(questions))
        return [
            RAGOutput(q, a, [h.passage.id for h in hs], [h.score for h in hs], (t1 - t0) / n, (t2 - t1) / n, hs)
            for q, a, hs in zip(questions, answers, hits)
        ]
