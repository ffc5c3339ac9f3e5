"""Validation used during training and LR search."""

from __future__ import annotations

from fedrag.errors import FedragError
from fedrag.evaluate import evaluate
from fedrag.generate.decoding import GenerationSettings
from fedrag.rag import RAGSystem
from fedrag.retrieve.choices import TOP_K


def validation_fn(with_generator: bool, top_k: int = TOP_K, k: int = 5, settings: GenerationSettings | None = None):
    """`fn(rag, examples) -> {recall@k or answer_recall@k, mrr@10, (em, f1)}` for
    [`train_stage`][train_stage]; answers are decoded with `settings` (the strategy's decoding)."""

    def fn(rag: RAGSystem, examples):
        view = RAGSystem(rag.searcher, rag.generator if with_generator else None, top_k=top_k, settings=settings)
        m = evaluate(view, examples, progress=False, ks=(1, k))
        return {key: m[key] for key in ("em", "f1", f"recall@{k}", "mrr@10", f"answer_recall@{k}") if key in m}

    return fn


def retrieval_key(metrics: dict, k: int = 5) -> float:
    """The retrieval figure to select on: Recall@k with gold ids, else answer-recall@k."""
    return metrics.get(f"recall@{k}", metrics.get(f"answer_recall@{k}", 0.0))


def carve_validation(train_ex, passages, seed: int = 0, limit: int | None = None, fraction: float = 0.2):
    """Split `train_ex` into train/validation by the title of the gold passage (by
    example when there are no gold ids); raises if either side would be empty."""
    import random

    from fedrag.data.converters import split_by_title

    if all(e.gold_ids for e in train_ex):
        fit, val = split_by_title(list(train_ex), passages, fraction, seed)
    else:
        shuffled = list(train_ex)
        random.Random(seed).shuffle(shuffled)
        cut = max(1, round(len(shuffled) * fraction))
        fit, val = shuffled[cut:], shuffled[:cut]
    if not fit or not val:
        raise FedragError(f"cannot carve a validation split from {len(train_ex)} training questions; pass --val")
    return fit, val[:limit] if limit else val
