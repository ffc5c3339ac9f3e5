"""LM-supervised retrieval (LSR) loss of REPLUG / RA-DIT."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedrag.generate.decoding import RETRIEVAL_GAMMA  # one temperature for training and decoding


def lsr_loss(
    retriever_scores: torch.Tensor, lm_logp: torch.Tensor, gamma: float = RETRIEVAL_GAMMA, tau: float = 1.0
) -> torch.Tensor:
    r"""KL(p_LM ‖ p_R) over the top-k retrieved passages, averaged over the batch.

    $$
    p_R(z_i|x) = \mathrm{softmax}_i\big(s(x, z_i)/\gamma\big), \qquad
    p_{LM}(z_i|x,y) = \mathrm{softmax}_i\big(\log p_{LM}(y|z_i,x)/\tau\big)
    $$

    $$
    \mathcal{L} = \frac{1}{B}\sum_b \sum_i p_{LM}(z_i) \big(\log p_{LM}(z_i) - \log p_R(z_i)\big)
    $$

    `retriever_scores` `[B, k]` must carry gradients to the query encoder;
    `lm_logp` `[B, k]` (log p(answer | passage_i, question), summed over answer
    tokens) is treated as a constant target (detached here).

    Direction: KL(p_LM ‖ p_R), as in REPLUG and RA-DIT. The LM distribution is the
    target; this direction is mass-covering (the retriever is penalised for giving low
    probability to any passage the LM finds useful) and its gradient with respect to
    the retriever scores is simply `(p_R - p_LM)/gamma`: a cross-entropy with soft labels.
    The reverse direction would let the retriever collapse onto one passage.
    """
    log_p_r = F.log_softmax(retriever_scores.float() / gamma, dim=-1)  # float32 even under autocast
    log_p_lm = F.log_softmax(lm_logp.detach().float() / tau, dim=-1)
    return (log_p_lm.exp() * (log_p_lm - log_p_r)).sum(-1).mean()
