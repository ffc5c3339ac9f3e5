"""Central DP's weights, noise and account as the rounds really run (`fedrag.federation.privacy.central_dp`).

At noise multiplier z and clip C the server releases the mean of the n sites' clipped updates
plus N(0, (zC / n)²) per value: the Gaussian mechanism at z on their sum, as accounted, only
if every site weighs 1/n in the mean and n is the number of updates averaged. Sites of
unequal example counts weigh equally; n is the number of sites sampled (`--fraction` of those
connected, at least `--min-sites`) that replied, whatever `--min-sites` says. Each value here
(means, noise std, sample size, ε) is worked out by hand; the strategy, the DP wrapper and the
accountant are the ones the server builds."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedrag.federation.task import FedTask
from test_values_privacy import _identity, _Nodes, dp_accounting_epsilon, gaussian_epsilon  # noqa: F401 - the fixture

N = 80_000  # values released: the noise std is measured to ~1/sqrt(2N) = 0.25%


def _round(strategy, nodes: int, updates, examples, failed=(), losses=None):
    """One round of `strategy` over `nodes` connected sites from the zero tensors: sampled
    site i replies `updates[i]` with `examples[i]` (its failure when i is in `failed`)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

    start = ArrayRecord({"packed.float32": Array(np.zeros(N, np.float32))})
    messages = list(strategy.configure_train(1, start, ConfigRecord({"phase": 0}), _Nodes(nodes)))
    replies = []
    for i, m in enumerate(messages):
        if i in failed:
            replies.append(Message(Error(code=0, reason="site lost"), reply_to=m))
            continue
        metrics = {"num-examples": examples[i], "train-loss": (losses or [1.0] * len(messages))[i]}
        arrays = ArrayRecord({"packed.float32": Array(updates[i].astype(np.float32))})
        replies.append(Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=m))
    arrays, metrics = strategy.aggregate_train(1, replies)
    return messages, arrays["packed.float32"].numpy().astype(np.float64), metrics


def test_sites_of_unequal_example_counts_weigh_equally_and_the_noise_is_zc_over_n():
    """Two sites, 4 and 12 examples. Site A moves the first half of the values by u, site B the
    second half (each update of L2 norm C, as clipped). Weighted equally the released mean is
    u/2 on both halves; weighted by examples it would be u/4 and 3u/4 (the mean then moves by
    3/4 of B's update: more than the C/2 the noise zC/2 is calibrated to). Flower's accounted
    wrapper alone refuses these replies mid-round ("requires equal client weights")."""
    from fedrag.federation.server.aggregator import make_accountant, make_aggregator
    from fedrag.federation.privacy.coverage import privacy_sections

    z, clip, delta = 0.05, 0.25, 1e-6
    task = FedTask(stage="ralt", dp_noise=z, dp_clip=clip, min_sites=2, dp_delta=delta)
    accountant, record = make_accountant(task), {}
    strategy = make_aggregator(task, accountant, record=record)
    half, u = N // 2, clip / math.sqrt(N // 2)
    a, b = np.zeros(N), np.zeros(N)
    a[:half], b[half:] = u, u
    _, released, metrics = _round(strategy, 2, [a, b], [4, 12], losses=[1.0, 3.0])
    std = z * clip / 2  # 0.00625; the mean of a half then has std 3.1e-5, u/4 = 3.1e-4
    for part in (released[:half], released[half:]):
        assert float(part.mean()) == pytest.approx(u / 2, abs=5 * std / math.sqrt(half)), "each site weighs 1/2"
    assert float((released - u / 2).std()) == pytest.approx(std, rel=0.02), "noise std zC / n, n = 2"
    assert metrics["train-loss"] == pytest.approx(2.0), "the sites' metrics averaged with equal weights too"
    assert record == {1: {"dp_sites": 2, "dp_noise_std": pytest.approx(std)}}
    spent = accountant.get_privacy_spent()
    assert spent.num_releases == 1 and spent.epsilon == pytest.approx(gaussian_epsilon(z, 1, delta), rel=1e-9)
    dp = privacy_sections([{"dp_sites": 2}], task, accountant)["dp"]
    assert dp["sites_per_round"] == [2] and dp["weighting"].startswith("equal: each site's clipped update is 1/n")


@pytest.mark.parametrize(
    "connected,fraction,min_sites,failed,n",
    [
        (3, 1.0, 2, (), 3),  # more sites connected than --min-sites: every one is sampled and averaged
        (6, 0.5, 2, (), 3),  # --fraction 0.5 of 6
        (5, 0.5, 3, (), 3),  # int(0.5 · 5) = 2 < --min-sites 3
        (3, 1.0, 2, (1,), 2),  # 3 sampled, one failed: the mean of the 2 that replied
    ],
)
def test_noise_and_account_follow_the_sites_aggregated_not_min_sites(connected, fraction, min_sites, failed, n):
    """Every site moves every value by the same small step (norm 0.1 < C): the release is the
    step plus noise of std zC / n, n the sites aggregated, and the accountant composes one
    Gaussian release at z whose sample is those n sites."""
    from fedrag.federation.server.aggregator import make_accountant, make_aggregator

    z, clip, delta = 0.8, 0.25, 1e-6
    task = FedTask(stage="ralt", dp_noise=z, dp_clip=clip, min_sites=min_sites, fraction=fraction, dp_delta=delta)
    accountant, record = make_accountant(task), {}
    strategy = make_aggregator(task, accountant, record=record)
    step = np.full(N, 0.1 / math.sqrt(N))
    sampled = max(int(connected * fraction), min_sites)
    messages, released, _ = _round(strategy, connected, [step] * sampled, [4] * sampled, failed=failed)
    assert len(messages) == sampled
    noise = released - step
    assert float(noise.mean()) == pytest.approx(0.0, abs=5 * z * clip / n / math.sqrt(N))
    assert float(noise.std()) == pytest.approx(z * clip / n, rel=0.02), f"noise std zC / {n}"
    assert record == {1: {"dp_sites": n, "dp_noise_std": pytest.approx(z * clip / n)}}
    (composition,) = accountant.state_dict()["compositions"]
    assert (composition["event"]["sample_size"], composition["event"]["noise_multiplier"], composition["count"]) == (n, z, 1)
    spent = accountant.get_privacy_spent()
    assert spent.epsilon == pytest.approx(gaussian_epsilon(z, 1, delta), rel=1e-9)
    assert spent.epsilon == pytest.approx(dp_accounting_epsilon(z, 1, delta), rel=1e-9)


@pytest.fixture(scope="module")
def three_sites(demo_dir, tmp_path_factory) -> list[dict]:
    """Three sites of the demo data; the last keeps one training question, so with batch size 2
    it trains on 2 examples a round where the others train on 4."""
    from fedrag.data import load_corpus, load_qa
    from fedrag.data.partition import partition, write_sites

    out = tmp_path_factory.mktemp("three")
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    sites = write_sites(partition(passages, train, 3, "by-title"), out / "sites")
    small = out / "small"
    small.mkdir()
    shutil.copy(sites[2]["corpus"], small / "corpus.jsonl")
    (small / "train.jsonl").write_text(Path(sites[2]["train"]).read_text().splitlines(keepends=True)[0])
    return sites[:2] + [{"corpus": str(small / "corpus.jsonl"), "train": str(small / "train.jsonl")}]


def test_a_run_with_more_sites_than_min_sites_and_unequal_counts_releases_what_it_accounts(tiny_models, three_sites, tmp_path):
    """Three sites under `--min-sites 2`, one of them with half the examples: every round averages
    the 3 replies with equal weights, adds noise of std zC/3 and composes one release at z.
    Before, the first round stopped in Flower's wrapper (3 sampled against the 2 it was built for)."""
    from in_process import run_in_process

    z, clip, rounds = 1.0, 0.5, 2
    task = FedTask(
        stage="ralt", retriever=tiny_models["retriever"], generator=tiny_models["generator"], rounds=rounds, local_steps=2,
        batch_size=2, lr_generator=1e-2, out=str(tmp_path / "dp"), min_sites=2, evaluate_every=0, dp_noise=z, dp_clip=clip,
    )  # fmt: skip
    run_in_process(task, three_sites)
    history = json.loads((tmp_path / "dp" / "rounds.json").read_text())
    assert [(h["replies"], h["dp_sites"], h["dp_releases"]) for h in history] == [(3, 3, 1), (3, 3, 2)]
    assert all(h["dp_noise_std"] == pytest.approx(z * clip / 3) for h in history)
    assert sorted(m["num-examples"] for m in history[0]["site_metrics"].values()) == [2, 4, 4], "the sites' own counts"
    assert history[-1]["dp_epsilon"] == pytest.approx(gaussian_epsilon(z, rounds, 1e-5), rel=1e-9)
    dp = json.loads((tmp_path / "dp" / "cost.json").read_text())["dp"]
    assert dp["sites_per_round"] == [3] and dp["epsilon"] == pytest.approx(gaussian_epsilon(z, rounds, 1e-5), rel=1e-9)
    report = (tmp_path / "dp" / "privacy.md").read_text()
    assert "averaged them with equal weights" in report and "n = the sites aggregated in a round: 3)" in report
