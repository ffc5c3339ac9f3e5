"""Answer negative log-likelihood for (retrieval-augmented) generator fine-tuning."""

from __future__ import annotations

import torch


def answer_nll(seq_logp: torch.Tensor, n_answer_tokens: torch.Tensor) -> torch.Tensor:
    r"""Token-averaged NLL of the answer tokens only.

    $$
    \mathcal{L} = -\frac{\sum_b \log p_\theta(y_b|x_b, z_b)}{\sum_b |y_b|}
    $$

    Prompt and context tokens carry no loss: `seq_logp` comes from
    [`fedrag.generate.Generator.score`][fedrag.generate.generator.Generator.score], which scores answer positions only.
    """
    return -seq_logp.sum() / n_answer_tokens.sum().clamp(min=1)
