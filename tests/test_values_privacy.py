"""Values, not just behaviour, of the privacy and aggregation code (issue #39).

Every ε here is computed independently of fedrag's own accountant helpers: in closed form
(the Gaussian mechanism's Rényi DP and dp-accounting's RDP -> (ε, δ) conversion, written out
below) and through dp-accounting's own API, called directly. The noise a release adds is
measured on the tensors it releases, so the multiplier that is accounted for is tied to the
noise that is actually drawn. FedProx's proximal term is checked against its closed form
(value and gradient) through the public `train_stage`.
"""

import math

import numpy as np
import pytest
import torch

from fedrag.federation.task import FedTask
from test_privacy import _context, _message  # the same hand-built ClientApp message and context

# dp-accounting's default RDP orders (dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS),
# written out: Flower's accountant builds dp-accounting's RdpAccountant with orders=None
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]


def gaussian_epsilon(sigma: float, releases: int, delta: float) -> float:
    """ε after `releases` Gaussian mechanisms at noise multiplier `sigma` (noise std over L2
    sensitivity), no subsampling, by hand: the Gaussian mechanism's RDP at order α is
    α / (2σ²) and composes additively; RDP -> (ε, δ) is Canonne-Kamath-Steinke's bound
    (arXiv 2004.00010, Prop. 12), ε = min_α RDP(α) + log(1 - 1/α) - log(δ α) / (α - 1),
    over the orders above (the ones above 1.01, as dp-accounting does)."""
    return min(releases * a / (2 * sigma**2) + math.log1p(-1 / a) - math.log(delta * a) / (a - 1) for a in ORDERS if a > 1.01)


def dp_accounting_epsilon(sigma: float, releases: int, delta: float) -> float:
    """The same ε from dp-accounting's API, called directly (not through Flower or fedrag)."""
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), releases))
    return acc.get_epsilon(delta)


@pytest.fixture(autouse=True)
def _identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):  # what a ClientApp / ServerApp process has set
        monkeypatch.setattr(TaskIdentity, name, 1)


def test_the_independent_references_agree():
    """The two references are one account: the closed form equals dp-accounting's value, and
    halving the multiplier (the local-DP convention) roughly doubles ε, so a test comparing
    against either would see a z vs z/2 mix-up."""
    for sigma, k, delta in ((0.75, 1, 1e-5), (0.75, 3, 1e-6), (2.0, 5, 1e-5), (0.4, 2, 1e-3)):
        assert gaussian_epsilon(sigma, k, delta) == pytest.approx(dp_accounting_epsilon(sigma, k, delta), rel=1e-9)
    assert gaussian_epsilon(0.75, 3, 1e-6) > 1.8 * gaussian_epsilon(1.5, 3, 1e-6)


def test_local_dp_epsilon_is_the_gaussian_mechanism_at_half_the_noise_multiplier(tmp_path):
    """Local DP at noise multiplier z and clip C: the site releases its update clipped to
    L2 norm C plus N(0, (zC)²) per coordinate. Neighbouring data of the site may move its
    clipped update anywhere in the ball of radius C, so the L2 sensitivity is the ball's
    diameter 2C and each release is the Gaussian mechanism at noise multiplier
    (zC) / (2C) = z / 2. The ε a site reports (its metrics, hence cost.json's `local_dp` and
    privacy.md), after k releases, must therefore be the RDP account of k Gaussian
    mechanisms at z / 2 -- computed here by hand and with dp-accounting directly -- and the
    noise measured on the released tensors must have std zC. Accounting at z (or any other
    multiplier) under-/over-reports ε ~2x or more. A site restarted between rounds (a new mod,
    the ledger on disk) keeps composing."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from fedrag.federation.privacy.local_dp import make_local_dp_mod
    from fedrag.federation.privacy.coverage import privacy_sections

    z, clip, delta = 1.5, 0.5, 1e-6
    task = FedTask(stage="ralt", local_dp_noise=z, local_dp_clip=clip, dp_delta=delta)
    corpus = tmp_path / "site0" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("")
    n = 60_000
    start = {"packed.float32": np.random.default_rng(1).normal(size=n).astype(np.float32)}

    def site_trains(msg, context):  # moves every weight by +1: update norm sqrt(n) >> C, so it is clipped to C
        arrays = ArrayRecord({k: Array(a.numpy() + np.float32(1.0)) for k, a in msg.content["arrays"].items()})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 4})}), reply_to=msg)

    history = []
    for k in (1, 2, 3):
        # a fresh mod (a restarted site process) for the last release: the ledger on disk carries the account
        mod = make_local_dp_mod(lambda context: task, lambda context: (str(corpus), []))
        out = mod(_message(start, k), _context({"partition-id": 0}), site_trains)
        update = out.content["arrays"]["packed.float32"].numpy().astype(np.float64) - start["packed.float32"]
        noise = update - clip / math.sqrt(n)  # the clipped update is C along (1, ..., 1) / sqrt(n)
        assert float(noise.mean()) == pytest.approx(0.0, abs=5 * z * clip / math.sqrt(n))
        assert float(noise.std()) == pytest.approx(z * clip, rel=0.02), "the noise std is z * C"
        metrics = out.content["metrics"]
        assert metrics["local-dp-releases"] == k
        expected = gaussian_epsilon(z / 2, k, delta)
        assert metrics["local-dp-epsilon"] == pytest.approx(expected, rel=1e-9), (
            f"after {k} releases at z={z}: reported {metrics['local-dp-epsilon']:.6g}, the Gaussian mechanism at z/2 "
            f"gives {expected:.6g} (at z: {gaussian_epsilon(z, k, delta):.6g})"
        )
        assert metrics["local-dp-epsilon"] == pytest.approx(dp_accounting_epsilon(z / 2, k, delta), rel=1e-9)
        history.append({"site_metrics": {"site-0": dict(metrics)}})
    # what cost.json's `local_dp` section reports: the site's last ε, at the run's δ
    local = privacy_sections(history, task, None)["local_dp"]
    assert local["delta"] == delta and local["sites"]["site-0"]["releases"] == 3
    assert local["sites"]["site-0"]["epsilon"] == pytest.approx(gaussian_epsilon(z / 2, 3, delta), rel=1e-9)


class _Nodes:
    """What Flower's FedAvg asks of the Grid to sample a round: the connected node ids (the
    transport itself is not exercised; the strategy, the DP wrapper and the accountant are
    Flower's and fedrag's real objects)."""

    def __init__(self, n: int):
        self.ids = list(range(1, n + 1))

    def get_node_ids(self):
        return self.ids


def test_central_dp_noise_and_epsilon_are_the_gaussian_mechanism_at_the_noise_multiplier():
    """Central DP (client-level, add-or-remove one site) at noise multiplier z, clip C, n
    sites a round: each site's update is clipped to C, so adding or removing one site moves
    the sum of the updates by at most C, and the server adds N(0, (zC)²) to that sum, i.e.
    N(0, (zC / n)²) to the mean FedAvg releases: the Gaussian mechanism at multiplier z.
    Through the strategy and accountant the server builds (`make_accountant`,
    `make_aggregator`), R rounds must add noise of std zC / n to the released mean and
    report (cost.json's `dp`) the RDP account of R Gaussian mechanisms at z, computed here by
    hand and with dp-accounting directly."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    from fedrag.federation.server.aggregator import make_accountant, make_aggregator
    from fedrag.federation.privacy.coverage import privacy_sections

    z, clip, sites, delta, rounds = 0.8, 0.25, 2, 1e-6, 3
    task = FedTask(stage="ralt", dp_noise=z, dp_clip=clip, min_sites=sites, dp_delta=delta)
    accountant = make_accountant(task)
    record: dict = {}  # the server's per-round record (rounds.json's dp_sites and dp_noise_std)
    strategy = make_aggregator(task, accountant, record=record)
    n = 80_000
    current = np.zeros(n, np.float32)
    step = np.full(n, 0.1 / math.sqrt(n), np.float32)  # a site update of norm 0.1 < C: clipping leaves it as is
    for rnd in range(1, rounds + 1):
        arrays = ArrayRecord({"packed.float32": Array(current)})
        messages = list(strategy.configure_train(rnd, arrays, ConfigRecord({"phase": 0}), _Nodes(sites)))
        assert len(messages) == sites and messages[0].content["config"]["clipping_norm"] == clip
        replies = [
            Message(
                RecordDict(
                    {
                        "arrays": ArrayRecord({"packed.float32": Array(current + step)}),
                        "metrics": MetricRecord({"num-examples": 4}),
                    }
                ),
                reply_to=m,
            )
            for m in messages
        ]
        aggregated, _ = strategy.aggregate_train(rnd, replies)
        noise = aggregated["packed.float32"].numpy().astype(np.float64) - (current + step)
        assert float(noise.std()) == pytest.approx(z * clip / sites, rel=0.02), "noise std zC / n on the mean"
        assert record[rnd] == {"dp_sites": sites, "dp_noise_std": pytest.approx(z * clip / sites, rel=1e-12)}
        spent = accountant.get_privacy_spent()
        assert spent.num_releases == rnd
        assert spent.epsilon == pytest.approx(gaussian_epsilon(z, rnd, delta), rel=1e-9), (
            f"after {rnd} rounds at z={z}: accounted {spent.epsilon:.6g}, "
            f"the Gaussian mechanism gives {gaussian_epsilon(z, rnd, delta):.6g}"
        )
        assert spent.epsilon == pytest.approx(dp_accounting_epsilon(z, rnd, delta), rel=1e-9)
    dp = privacy_sections([], task, accountant)["dp"]
    assert dp["releases"] == rounds and dp["delta"] == delta and dp["noise_multiplier"] == z
    assert dp["epsilon"] == pytest.approx(gaussian_epsilon(z, rounds, delta), rel=1e-9)


def _one_step(rag, start, examples, mu, reference):
    """One AdamW step of RALT from `start` (constant lr, no gradient clipping): the logged
    loss of the step and the gradient it took, read back from AdamW's first moment (after
    one step exp_avg = (1 - β1) · g, β1 = 0.9)."""
    from fedrag.train import RALTStage, TrainConfig, set_state, train_stage

    set_state(rag, start)
    cfg = TrainConfig(steps=1, batch_size=2, lr_generator=1e-2, scheduler="constant", warmup_ratio=0.0, max_grad_norm=0.0)
    moments = {}
    res = train_stage(RALTStage(top_k=2), rag, examples, cfg, reference=reference, optimizer_state=moments, prox_mu=mu)
    return res.history[0]["loss"], {k: moments[f"{k}::exp_avg"].double() / (1 - 0.9) for k in start}


def test_fedprox_adds_mu_over_two_squared_distance_to_the_loss_and_mu_times_distance_to_the_gradient(tiny_models, demo_dir):
    """FedProx (Li et al. 2020) minimises F(w) + mu/2 · ||w - w_ref||². From weights w that
    sit at a known offset d = w - w_ref from the reference, one step with mu against the same
    step without it (same seed, same batch): the logged loss differs by exactly
    mu/2 · ||d||² and the gradient by exactly mu · d (hand-computed in float64)."""
    from fedrag.data import load_qa
    from fedrag.train import get_state
    from test_stages import make_rag

    rag = make_rag(tiny_models, demo_dir)
    start = get_state(rag, ("generator",))
    size = sum(t.numel() for t in start.values())
    gen = torch.Generator().manual_seed(0)
    offset = {k: torch.randn(t.shape, generator=gen, dtype=torch.float64) * math.sqrt(0.5 / size) for k, t in start.items()}
    reference = {k: (start[k].double() - offset[k]).float() for k in start}
    d = {k: start[k].double() - reference[k].double() for k in start}  # the offset as float32 can hold it
    examples = load_qa(demo_dir / "train.jsonl")[:2]
    mu = 2.0

    plain_loss, plain_grad = _one_step(rag, start, examples, 0.0, None)
    prox_loss, prox_grad = _one_step(rag, start, examples, mu, reference)
    again_loss, again_grad = _one_step(rag, start, examples, 0.0, None)
    assert again_loss == plain_loss and all(torch.equal(again_grad[k], plain_grad[k]) for k in start), "deterministic"

    term = mu / 2 * sum(float((t**2).sum()) for t in d.values())
    assert 0.3 < term < 0.7  # ~0.5: the term is well above float32 noise on the loss
    # measured: relative error 3e-8 on the loss, 5e-9 absolute on the gradient (|mu·d| up to 0.06)
    assert prox_loss - plain_loss == pytest.approx(term, rel=1e-5), f"loss difference vs mu/2·||d||² = {term:.6g}"
    scale = max(float((mu * t).abs().max()) for t in d.values())
    for k in start:
        torch.testing.assert_close(prox_grad[k] - plain_grad[k], mu * d[k], rtol=1e-4, atol=1e-6 * scale, msg=k)


def test_a_fedprox_site_pulls_towards_the_global_tensors_it_received_with_the_servers_mu(tiny_models, demo_dir):
    """The site's side of FedProx as a round runs it: mu is what Flower's FedProx puts in
    the round's config (`make_aggregator`), the reference is the global tensors the message
    carried. Two local steps: the first starts at the reference, so its proximal gradient is
    zero and it matches a plain step (w1, from a one-step round); the second step's loss,
    the round's `train-loss`, then carries exactly mu/2 · ||w1 - w0||² more than a plain
    two-step round's."""
    from flwr.app import ConfigRecord

    from fedrag.federation.server.aggregator import make_aggregator
    from fedrag.federation.wire.tensors import to_wire
    from fedrag.federation.site.local_round import site_rag, train_round
    from fedrag.data import load_qa
    from fedrag.train import get_state

    mu = 1.5
    corpus, examples = str(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")[:4]
    common = dict(stage="ralt", retriever=tiny_models["retriever"], generator=tiny_models["generator"], rounds=1)
    common.update(batch_size=2, lr_generator=1e-2, warmup_ratio=0.0, evaluate_every=0)
    two = FedTask(**common, local_steps=2, aggregator="fedprox", proximal_mu=mu)
    start = get_state(site_rag(two, corpus), ("generator",))
    arrays = to_wire(start)
    (message, *_) = make_aggregator(two).configure_train(1, arrays, ConfigRecord({"phase": 0, "round-offset": 0}), _Nodes(2))
    config = message.content["config"]
    assert config["proximal-mu"] == mu
    plain_config = {"phase": 0, "server-round": 1, "round-offset": 0}

    w1, _ = train_round(FedTask(**common, local_steps=1), corpus, examples, arrays, plain_config)
    _, plain = train_round(FedTask(**common, local_steps=2), corpus, examples, arrays, plain_config)
    _, prox = train_round(two, corpus, examples, arrays, config)
    term = mu / 2 * sum(float(((w1[k].double() - start[k].double()) ** 2).sum()) for k in start)
    assert term > 0.05, "the first step moved the adapter"
    # measured: 6e-9 absolute (term ~0.31)
    assert prox.train_loss - plain.train_loss == pytest.approx(term, rel=1e-5), f"mu/2·||w1 - w0||² = {term:.6g}"
