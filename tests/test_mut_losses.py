"""The losses against their formulas written out in numpy (issue #39, mutation score): each
test computes the loss (and where it matters its gradient) independently of fedrag and of
torch's own loss functions, so a changed sign, temperature, axis, mask or default fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrag.losses import answer_nll, info_nce, lsr_loss, rag_sequence_nll, rag_token_nll


def _log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _info_nce_ref(q, p, n, scale, exclude=None) -> float:
    cand = p if n is None else np.concatenate([p, n])
    logits = scale * q @ cand.T
    if exclude is not None:
        keep = ~exclude
        keep[np.arange(len(q)), np.arange(len(q))] = True  # a row's own positive always counts
        logits = np.where(keep, logits, -np.inf)
    return float(-np.mean([logits[i, i] - _logsumexp(logits[i], 0) for i in range(len(q))]))


def test_info_nce_is_the_in_batch_softmax_cross_entropy_at_scale_20():
    q, p = _unit(3, 4, 0), _unit(3, 4, 1)
    got = info_nce(torch.tensor(q), torch.tensor(p))
    assert got.item() == pytest.approx(_info_nce_ref(q, p, None, 20.0), rel=1e-5)


def test_info_nce_counts_hard_negatives_in_each_denominator_at_the_given_scale():
    q, p, n = _unit(3, 4, 2), _unit(3, 4, 3), _unit(2, 4, 4)
    got = info_nce(torch.tensor(q), torch.tensor(p), torch.tensor(n), scale=3.0)
    assert got.item() == pytest.approx(_info_nce_ref(q, p, n, 3.0), rel=1e-5)
    assert got.item() != pytest.approx(_info_nce_ref(q, p, None, 3.0), rel=1e-3)


def test_info_nce_exclude_drops_other_golds_but_never_the_rows_own_positive():
    q, p, n = _unit(3, 4, 5), _unit(3, 4, 6), _unit(1, 4, 7)
    exclude = np.zeros((3, 4), dtype=bool)
    exclude[0, 1] = exclude[1, 0] = True  # rows 0 and 1: the same question's two golds
    exclude[2, 2] = True  # asks to drop row 2's own positive: ignored
    mask = torch.tensor(exclude)
    got = info_nce(torch.tensor(q), torch.tensor(p), torch.tensor(n), scale=5.0, exclude=mask)
    assert got.item() == pytest.approx(_info_nce_ref(q, p, n, 5.0, exclude), rel=1e-5)
    assert torch.equal(mask, torch.tensor(exclude)), "the caller's mask was changed in place"


def _lsr_ref(s: np.ndarray, lm: np.ndarray, gamma: float, tau: float) -> float:
    log_r, log_lm = _log_softmax(s / gamma), _log_softmax(lm / tau)
    return float((np.exp(log_lm) * (log_lm - log_r)).sum(-1).mean())


LSR_S = np.array([[0.2, 0.5, -0.1], [0.9, 0.1, 0.3]])
LSR_LM = np.array([[-3.0, -1.0, -2.5], [-0.5, -4.0, -2.0]])


def test_lsr_is_kl_of_the_lm_distribution_to_the_retrievers_at_the_default_temperatures():
    got = lsr_loss(torch.tensor(LSR_S), torch.tensor(LSR_LM))
    assert got.item() == pytest.approx(_lsr_ref(LSR_S, LSR_LM, 0.1, 1.0), rel=1e-5)


def test_lsr_temperatures_and_its_gradient_p_r_minus_p_lm_over_gamma():
    s = torch.tensor(LSR_S, requires_grad=True)
    lm = torch.tensor(LSR_LM, requires_grad=True)
    got = lsr_loss(s, lm, gamma=0.5, tau=2.0)
    assert got.item() == pytest.approx(_lsr_ref(LSR_S, LSR_LM, 0.5, 2.0), rel=1e-5)
    got.backward()
    p_r, p_lm = np.exp(_log_softmax(LSR_S / 0.5)), np.exp(_log_softmax(LSR_LM / 2.0))
    np.testing.assert_allclose(s.grad.numpy(), (p_r - p_lm) / 0.5 / len(LSR_S), rtol=1e-5, atol=1e-7)
    assert lm.grad is None, "the LM target must be a constant (detached)"


def test_answer_nll_divides_the_summed_log_likelihood_by_the_answer_tokens():
    assert answer_nll(torch.tensor([-2.0, -4.0]), torch.tensor([3, 1])).item() == pytest.approx(6.0 / 4)
    assert answer_nll(torch.tensor([-2.0, -4.0]), torch.tensor([1, 0])).item() == pytest.approx(6.0)
    # no answer token at all: the clamp keeps it finite (the sum itself)
    assert answer_nll(torch.tensor([-2.0]), torch.tensor([0])).item() == pytest.approx(2.0)


RAG_S = np.array([[1.0, 0.2, -0.5], [0.1, 0.4, 0.3]])
RAG_SEQ = np.array([[-2.0, -1.0, -6.0], [-3.0, -0.5, -1.5]])


@pytest.mark.parametrize("gamma", [None, 0.7])
def test_rag_sequence_is_minus_log_of_the_prior_weighted_likelihood(gamma):
    from fedrag.generate.decoding import RETRIEVAL_GAMMA

    g = RETRIEVAL_GAMMA if gamma is None else gamma
    prior = np.exp(_log_softmax(RAG_S / g))
    ref = float(np.mean(-np.log((prior * np.exp(RAG_SEQ)).sum(-1))))
    kw = {} if gamma is None else {"gamma": gamma}
    assert rag_sequence_nll(torch.tensor(RAG_S), torch.tensor(RAG_SEQ), **kw).item() == pytest.approx(ref, rel=1e-6)


def test_rag_token_marginalises_each_token_and_masks_padding():
    rng = np.random.default_rng(0)
    tok = -rng.uniform(0.1, 3.0, size=(2, 3, 4))  # [B, k, T]
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=float)
    for gamma in (0.7, 2.0):
        prior = np.exp(_log_softmax(RAG_S / gamma))  # [B, k]
        per_token = np.log((prior[:, :, None] * np.exp(tok)).sum(1))  # [B, T]
        ref = float(np.mean(-(per_token * mask).sum(-1)))
        got = rag_token_nll(torch.tensor(RAG_S), torch.tensor(tok), torch.tensor(mask), gamma=gamma)
        assert got.item() == pytest.approx(ref, rel=1e-6)


def test_rag_token_default_temperature_is_the_decoding_one():
    from fedrag.generate.decoding import RETRIEVAL_GAMMA

    tok = -np.random.default_rng(1).uniform(0.1, 3.0, size=(2, 3, 2))
    mask = np.ones((2, 2))
    prior = np.exp(_log_softmax(RAG_S / RETRIEVAL_GAMMA))
    ref = float(np.mean(-np.log((prior[:, :, None] * np.exp(tok)).sum(1)).sum(-1)))
    assert rag_token_nll(torch.tensor(RAG_S), torch.tensor(tok), torch.tensor(mask)).item() == pytest.approx(ref, rel=1e-6)


def test_info_nce_targets_live_on_the_queries_device():
    """On a GPU the targets must be on the queries' device; the 'meta' device shows it on a CPU
    machine (a CPU target next to meta logits fails as a CPU target next to CUDA ones does)."""
    q, p = torch.empty(3, 4, device="meta"), torch.empty(3, 4, device="meta")
    assert info_nce(q, p).device.type == "meta"
