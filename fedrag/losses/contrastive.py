"""In-batch contrastive loss for the retriever (InfoNCE / Multiple Negatives Ranking)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
             scale: float = 20.0) -> torch.Tensor:
    r"""Multiple Negatives Ranking loss with optional hard negatives.

    For a batch of ``B`` normalised query embeddings :math:`q_i` with their gold passage
    embeddings :math:`p_i` and ``H`` extra hard negatives :math:`n_h`:

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_i \log
        \frac{\exp(s\, q_i^\top p_i)}{\sum_j \exp(s\, q_i^\top p_j) + \sum_h \exp(s\, q_i^\top n_h)}

    where ``s = scale`` (20, as sentence-transformers' ``MultipleNegativesRankingLoss``).
    That loss runs the passage side through the encoder; here the passage side may be
    the store's frozen embeddings, so the same maths is applied to given embeddings.
    Duplicate positives in a batch (two questions about one passage) are not masked.
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    logits = scale * (queries @ candidates.T).float()
    return F.cross_entropy(logits, torch.arange(queries.shape[0], device=queries.device))
