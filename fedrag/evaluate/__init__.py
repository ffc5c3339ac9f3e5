"""Evaluation: EM/F1 with SQuAD normalisation, Recall@k, MRR@10, latency."""

from fedrag.evaluate.evaluator import evaluate
from fedrag.evaluate.metrics import (
    answer_recall_at_k,
    exact_match,
    f1_score,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    paired_sign_test,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "answer_recall_at_k",
    "evaluate",
    "exact_match",
    "f1_score",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize_answer",
    "paired_sign_test",
    "precision_at_k",
    "recall_at_k",
]
