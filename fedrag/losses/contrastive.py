"""In-batch contrastive loss for the retriever (InfoNCE / Multiple Negatives Ranking)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    scale: float = 20.0,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Multiple Negatives Ranking loss with optional hard negatives.

    For a batch of `B` normalised query embeddings $q_i$ with their gold passage
    embeddings $p_i$ and `H` extra hard negatives $n_h$:

    $$
    \mathcal{L} = -\frac{1}{B}\sum_i \log
    \frac{\exp(s\, q_i^\top p_i)}{\sum_j \exp(s\, q_i^\top p_j) + \sum_h \exp(s\, q_i^\top n_h)}
    $$

    where `s = scale` (20, as sentence-transformers' `MultipleNegativesRankingLoss`).
    That loss runs the passage side through the encoder; here the passage side may be
    the store's frozen embeddings, so the same maths is applied to given embeddings.
    `exclude` (bool `[B, B + H]`) removes candidates from row `i`'s denominator:
    with several gold passages per question, row `i` is one (question, gold) pair and
    the question's *other* golds are excluded rather than counted as negatives (the
    multi-positive form, one term per pair). Row `i`'s own positive is never excluded.
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    logits = scale * (queries @ candidates.T).float()
    target = torch.arange(queries.shape[0], device=queries.device)
    if exclude is not None:
        exclude = exclude.clone()
        exclude[target, target] = False
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, target)
