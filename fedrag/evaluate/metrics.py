"""QA and retrieval metrics (SQuAD-style answer normalisation)."""

from __future__ import annotations

import math
import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and articles (a/an/the), squeeze whitespace (SQuAD v1.1)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, answers: list[str] | tuple[str, ...]) -> float:
    """1.0 if the normalised prediction equals any normalised answer alias."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(a) for a in answers))


def _f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, answers: list[str] | tuple[str, ...]) -> float:
    """Token-level F1, maximised over answer aliases."""
    return max(_f1(prediction, a) for a in answers)


def recall_at_k(retrieved: list[str], gold: list[str] | tuple[str, ...], k: int) -> float:
    """Fraction of gold passages found among the first `k` retrieved ids."""
    if not gold:
        return float("nan")
    top = set(retrieved[:k])
    return sum(g in top for g in gold) / len(gold)


def precision_at_k(retrieved: list[str], gold: list[str] | tuple[str, ...], k: int) -> float:
    """Fraction of the first `k` retrieved ids that are gold passages (of `k`, also when
    fewer than `k` were retrieved, as trec_eval counts it)."""
    if not gold:
        return float("nan")
    gold = set(gold)
    return sum(pid in gold for pid in retrieved[:k]) / k


def ndcg_at_k(retrieved: list[str], gold: list[str] | tuple[str, ...], k: int = 10) -> float:
    r"""Normalised discounted cumulative gain with binary relevance:

    $$
    \mathrm{nDCG@}k = \frac{\sum_{i=1}^{k} \mathrm{rel}_i / \log_2(i+1)}{\sum_{i=1}^{\min(k, |G|)} 1 / \log_2(i+1)}
    $$

    where $\mathrm{rel}_i$ is 1 when the passage at rank $i$ is one of the gold set $G$."""
    if not gold:
        return float("nan")
    gold = set(gold)
    dcg = sum(1 / math.log2(rank + 1) for rank, pid in enumerate(retrieved[:k], 1) if pid in gold)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(gold)) + 1))
    return dcg / ideal


def mrr_at_k(retrieved: list[str], gold: list[str] | tuple[str, ...], k: int = 10) -> float:
    """Reciprocal rank of the first gold passage within the top `k` (0 if none)."""
    gold = set(gold)
    for rank, pid in enumerate(retrieved[:k], 1):
        if pid in gold:
            return 1.0 / rank
    return 0.0


def answer_recall_at_k(passage_texts: list[str], answers: list[str] | tuple[str, ...], k: int) -> float:
    """1.0 if a normalised gold answer occurs in one of the first `k` passages (DPR's
    "top-k accuracy"): a retrieval metric that needs no gold passage ids."""
    needles = [f" {normalize_answer(a)} " for a in answers if normalize_answer(a)]
    return float(any(n in f" {normalize_answer(t)} " for t in passage_texts[:k] for n in needles))


def sign_test(gained: int, lost: int) -> float:
    """Exact two-sided sign-test p-value of `gained` against `lost` changed questions:
    `min(1, 2·Σ_{i≤min(gained, lost)} C(n, i) / 2^n)` with `n = gained + lost`, the
    chance of a split at least this uneven if neither system were better."""
    n = gained + lost
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_sign_test(before: list[float], after: list[float]) -> tuple[int, int, float]:
    """Question-by-question comparison of two systems' scores on the same questions:
    `(gained, lost, p)`, how many questions scored higher with `after`, how many
    lower (ties are dropped), and [`sign_test`][sign_test]'s p."""
    if len(before) != len(after):
        raise ValueError(f"paired scores need the same questions ({len(before)} against {len(after)})")
    gained = sum(b > a for a, b in zip(before, after))
    lost = sum(b < a for a, b in zip(before, after))
    return gained, lost, sign_test(gained, lost)
