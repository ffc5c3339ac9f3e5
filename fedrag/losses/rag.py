"""Marginal likelihood losses of RAG (Lewis et al. 2020): RAG-Sequence and RAG-Token."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedrag.generate.decoding import RETRIEVAL_GAMMA  # one temperature for training and decoding


def rag_sequence_nll(retriever_scores: torch.Tensor, seq_logp: torch.Tensor, gamma: float = RETRIEVAL_GAMMA) -> torch.Tensor:
    r"""RAG-Sequence negative log-likelihood, averaged over the batch.

    $$
    \mathcal{L} = -\log \sum_{z \in \text{top-}k} p_\eta(z|x)\, p_\theta(y|x,z),
    \qquad p_\eta(z|x) = \mathrm{softmax}_z\big(s(x,z)/\gamma\big)
    $$

    computed as `-logsumexp_z(log p_eta(z|x) + log p_theta(y|x,z))`.
    `retriever_scores` `[B, k]` carries gradients to the query encoder (unless the
    retriever is frozen), `seq_logp` `[B, k]` to the generator. With `k = 1` this
    is the plain answer NLL `-log p_theta(y|x,z)`.
    """
    log_prior = F.log_softmax(retriever_scores.float() / gamma, dim=-1)  # float32 even under autocast
    return -torch.logsumexp(log_prior + seq_logp.float(), dim=-1).mean()


def rag_token_nll(
    retriever_scores: torch.Tensor, token_logp: torch.Tensor, mask: torch.Tensor, gamma: float = RETRIEVAL_GAMMA
) -> torch.Tensor:
    r"""RAG-Token negative log-likelihood, averaged over the batch.

    $$
    \mathcal{L} = -\sum_i \log \sum_{z \in \text{top-}k} p_\eta(z|x)\, p_\theta(y_i|x,z,y_{<i})
    $$

    `token_logp` is `[B, k, T]` (answer token `i` under passage `z`; the answer
    tokens are the same for the k passages of one question), `mask` `[B, T]` marks
    real answer tokens. With `k = 1` it equals the plain answer NLL.
    """
    log_prior = F.log_softmax(retriever_scores.float() / gamma, dim=-1)
    per_token = torch.logsumexp(log_prior[..., None] + token_logp.float(), dim=1)  # [B, T]
    return -(per_token * mask).sum(-1).mean()
