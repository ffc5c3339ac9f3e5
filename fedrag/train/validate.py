"""Validation used during training and LR search."""

from __future__ import annotations

from fedrag.evaluate import evaluate
from fedrag.rag import RAGSystem


def validation_fn(with_generator: bool, top_k: int = 3, k: int = 5):
    """``fn(rag, examples) -> {recall@k, mrr@10, (em, f1)}`` for :func:`train_stage`."""

    def fn(rag: RAGSystem, examples):
        view = RAGSystem(rag.searcher, rag.generator if with_generator else None, top_k=top_k)
        m = evaluate(view, examples, progress=False, ks=(1, k))
        return {key: m[key] for key in ("em", "f1", f"recall@{k}", "mrr@10") if key in m}

    return fn
