"""The privacy report and the aggregation settings, value by value (issue #39, mutation
score): cost.json's sections against hand-written dicts, ε against dp-accounting called
directly, privacy.md against the text it must say, and the Flower strategy's settings
against the task's."""

from __future__ import annotations

import pytest

from fedrag.federation.privacy.coverage import local_dp_report, privacy_markdown, privacy_sections, secagg_report
from fedrag.federation.task import FedTask

NOT_COVERED = "site metrics (losses, Recall@5, counts) leave the sites without noise"

HISTORY = [
    {
        "site_metrics": {"7": {"local-dp-epsilon": 3.21, "local-dp-releases": 1.0}, "9": {"loss": 1.0}},
        "secure_aggregation": {"threshold": 2, "dropped": 1, "clipped_values": 4},
        "dp_sites": 3,
    },
    {"site_metrics": {"3": {"local-dp-epsilon": 2.0, "local-dp-releases": 1.0}}},
    {
        "site_metrics": {"7": {"local-dp-epsilon": 4.5678, "local-dp-releases": 2.0}},
        "secure_aggregation": {"threshold": 3, "dropped": 2},
        "dp_sites": 2,
    },
]
FULL = dict(dp_noise=0.8, dp_clip=0.25, min_sites=3, dp_delta=1e-6, local_dp_noise=1.5, local_dp_clip=0.5)
FULL.update(secagg=True, secagg_clip=8.0, secagg_quantization=4096)


def _dp_accounting_epsilon(sigma: float, releases: int, delta: float) -> float:
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), releases))
    return acc.get_epsilon(delta)


def _released(task: FedTask, releases: int):
    """The run's accountant (fedrag's) after `releases` central releases at the task's z."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from fedrag.federation.server.aggregator import make_accountant

    acc = make_accountant(task)
    for _ in range(releases):
        event = GaussianPrivacyEvent(
            task.privacy.dp_noise, sample_size=task.aggregation.min_sites, population_size=acc.config.population_size
        )
        acc.compose(event)
    return acc


def test_sections_of_a_run_with_every_protection():
    task = FedTask(stage="ralt", **FULL)
    out = privacy_sections(HISTORY, task, _released(task, 2))
    eps = _dp_accounting_epsilon(0.8, 2, 1e-6)
    assert out["dp"] == {
        "epsilon": pytest.approx(eps, rel=1e-9),
        "delta": 1e-6,
        "releases": 2,
        "noise_multiplier": 0.8,
        "clip": 0.25,
        "weighting": "equal: each site's clipped update is 1/n of the round's mean, whatever its example count",
        "sites_per_round": [2, 3],
        "covers": "the aggregated model updates of every round of every phase (RDP, composed)",
        "not_covered": NOT_COVERED,
    }
    assert out["local_dp"] == {
        "noise_multiplier": 1.5,
        "clip": 0.5,
        "delta": 1e-6,
        "sites": {"7": {"epsilon": 4.5678, "releases": 2}, "3": {"epsilon": 2.0, "releases": 1}},  # each site's last
        "covers": "each site's model updates, noised on the site before they leave it (RDP, composed per site)",
        "not_covered": NOT_COVERED,
    }
    assert out["secure_aggregation"] == {
        "protocol": "SecAgg+ (Flower)",
        "rounds": 2,
        "threshold": [2, 3],
        "clip": 8.0,
        "quantization": 4096,
        "dropped_sites": 3,
        "clipped_values": 4,
        "server_sees": "per round, the weighted sum of the sites' updates (decoded); never one site's update",
    }
    assert isinstance(out["dp"]["epsilon"], float) and isinstance(out["local_dp"]["sites"]["7"]["releases"], int)


def test_no_release_reports_no_epsilon_and_covers_nothing():
    task = FedTask(stage="ralt", dp_noise=0.8, dp_delta=1e-6)
    dp = privacy_sections([], task, _released(task, 0))["dp"]
    assert dp["epsilon"] is None and dp["releases"] == 0 and dp["delta"] == 1e-6
    assert dp["covers"] == "nothing: no noised release was made"


def test_local_dp_section_is_there_when_a_site_noised_or_the_task_asks():
    plain = FedTask(stage="ralt")
    assert privacy_sections(HISTORY[1:2], plain, None) == {"local_dp": local_dp_report(HISTORY[1:2], plain)}
    assert local_dp_report(HISTORY[1:2], plain)["sites"] == {"3": {"epsilon": 2.0, "releases": 1}}
    assert local_dp_report([], FedTask(stage="ralt", local_dp_noise=0.5))["sites"] == {}
    assert local_dp_report([{"round": 1}], FedTask(stage="ralt", local_dp_noise=0.5))["sites"] == {}, (
        "a round without site metrics"
    )
    assert local_dp_report([{"site_metrics": {"1": {"loss": 2.0}}}], plain) is None
    assert privacy_sections([], plain, None) == {}
    assert secagg_report([], FedTask(stage="ralt", secagg=True))["rounds"] == 0


MARKDOWN_FULL = """# Privacy report

## What left each site

| message | what | form | covered by |
|---|---|---|---|
| train reply | the phase's trainable tensors (the round's update) | clipped and noised on the site and masked \
(the server decodes only the sum) | local ε per site (below); central ε (below) for what the server publishes |
| train reply | metrics: loss, example and token counts, timings | clear | nothing |
| evaluate reply (when sites evaluate) | metrics: loss, Recall@5, count | clear | nothing |
| secure aggregation | public keys, encrypted key shares, unmasking shares | protocol | – |

## Secure aggregation

Flower's SecAgg+ over 2 rounds, reconstruction threshold 2, 3: each site masked its update, each value weighted by \
1/n (central DP) and bounded by ±8, quantised to 4096 levels; the server decoded only the weighted sum. \
3 site-rounds dropped out and were unmasked from their shares; 4 values were clipped.

## Central differential privacy

Sites clipped their updates to L2 norm 0.25; the server averaged them with equal weights (each site 1/n of the mean, \
whatever its example count; n = the sites aggregated in a round: 2, 3) and added Gaussian noise of multiplier 0.8 to \
their sum (std 0.8 × 0.25 / n on the mean). 2 releases composed: ε = {eps}, δ = 1e-06 (client level: a whole site's data added or removed). \
Under secure aggregation the server saw only the sum of the clipped updates, unnoised.

## Local differential privacy

Each site clipped its update to L2 norm 0.5 and added Gaussian noise of multiplier 1.5 (or its own, higher, \
node-config value) before it left the site. Per site, δ = 1e-06:

| site | releases | ε |
|---|---|---|
| 3 | 1 | 2 |
| 7 | 2 | 4.57 |

Not covered: site metrics (losses, Recall@5, counts) leave the sites without noise. \
`--evaluate-every 0` stops the evaluation metrics.

"""


def test_privacy_markdown_of_a_run_with_every_protection():
    task = FedTask(stage="ralt", **FULL)
    eps = f"{_dp_accounting_epsilon(0.8, 2, 1e-6):.3g}"
    assert privacy_markdown(privacy_sections(HISTORY, task, _released(task, 2))) == MARKDOWN_FULL.replace("{eps}", eps)


TABLE_HEAD = """# Privacy report

## What left each site

| message | what | form | covered by |
|---|---|---|---|
"""
METRIC_ROWS = """| train reply | metrics: loss, example and token counts, timings | clear | nothing |
| evaluate reply (when sites evaluate) | metrics: loss, Recall@5, count | clear | nothing |
"""
DATA = "The sites' data (questions, passages, the knowledge store) never left them; the updates can still leak it.\n"


def test_privacy_markdown_without_any_protection_says_so():
    text = privacy_markdown(privacy_sections([], FedTask(stage="ralt"), None))
    assert text == (
        TABLE_HEAD
        + "| train reply | the phase's trainable tensors (the round's update) | clear | nothing |\n"
        + METRIC_ROWS
        + "\nNo differential privacy was on: each site's model updates reached the server as the site computed them.\n"
        + DATA
    )


def test_privacy_markdown_under_secure_aggregation_alone():
    text = privacy_markdown({"secure_aggregation": secagg_report([], FedTask(stage="ralt", secagg=True, secagg_clip=2.5))})
    assert "| the phase's trainable tensors (the round's update) | masked (the server decodes only the sum) | nothing |" in text
    assert "each value weighted by the site's share of examples and bounded by ±2.5, quantised to 4194304 levels" in text
    assert text.endswith(
        "No differential privacy was on: the sum of the sites' updates is exact, and one site's update can be "
        "inferred from it by anyone who knows the others'.\n" + DATA
    )


def test_privacy_markdown_of_central_dp_alone_without_a_release():
    task = FedTask(stage="ralt", dp_noise=1.25, dp_clip=0.5, dp_delta=1e-5)
    text = privacy_markdown(privacy_sections([], task, _released(task, 0)))
    row = "| train reply | the phase's trainable tensors (the round's update) | clipped | "
    assert row + "central ε (below) for what the server publishes |\n" in text
    assert "secure aggregation" not in text and "## Local" not in text and "No differential privacy" not in text
    assert (
        "0 releases composed: no ε (nothing was released), δ = 1e-05 (client level: a whole site's data added or "
        "removed). The server saw each site's clipped update unnoised.\n\n"
    ) in text
    assert "multiplier 1.25 to their sum" in text and "L2 norm 0.5;" in text
    assert "(each site 1/n of the mean, whatever its example count; n = the sites aggregated in a round: –)" in text
    assert text.endswith(f"Not covered: {NOT_COVERED}. `--evaluate-every 0` stops the evaluation metrics.\n\n")


def test_privacy_markdown_of_local_dp_alone():
    task = FedTask(stage="ralt", local_dp_noise=2.0, local_dp_clip=0.1)
    text = privacy_markdown(privacy_sections(HISTORY[1:2], task, None))
    row = "| train reply | the phase's trainable tensors (the round's update) | noised on the site | local ε per site (below) |"
    assert row in text and "## Central" not in text and "| 3 | 1 | 2 |" in text


# ---------------------------------------------------------------- the server's strategy and accountant


@pytest.mark.parametrize(
    "name,cls,extra",
    [
        ("fedavg", "FedAvg", {}),
        ("fedprox", "FedProx", {"proximal_mu": 0.3}),
        ("fedadam", "FedAdam", {"eta": 0.7}),
        ("fedyogi", "FedYogi", {"eta": 0.7}),
    ],
)
def test_the_strategy_is_the_stock_flower_class_with_the_tasks_settings(name, cls, extra):
    from fedrag.federation.server.aggregator import make_aggregator

    task = FedTask(stage="ralt", aggregator=name, proximal_mu=0.3, server_lr=0.7, fraction=0.5, min_sites=3)
    s = make_aggregator(task)
    assert type(s).__name__ == cls
    got = {k: getattr(s, k) for k in ("fraction_train", "min_train_nodes", "min_available_nodes", "min_evaluate_nodes")}
    assert got == {"fraction_train": 0.5, "min_train_nodes": 3, "min_available_nodes": 3, "min_evaluate_nodes": 3}
    assert s.fraction_evaluate == 0.5, "sites evaluate as they train when the server holds no QA"
    assert {k: getattr(s, k) for k in extra} == extra


def test_sites_do_not_evaluate_when_the_server_evaluates_held_out_qa():
    from fedrag.federation.server.aggregator import make_aggregator

    assert make_aggregator(FedTask(stage="ralt", eval_qa="qa.jsonl", fraction=0.5)).fraction_evaluate == 0.0


def test_central_dp_wraps_the_strategy_and_builds_its_own_accountant_when_none_is_given():
    from fedrag.federation.server.aggregator import make_aggregator

    task = FedTask(stage="ralt", aggregator="fedprox", proximal_mu=0.3, dp_noise=0.5, dp_clip=0.2, min_sites=3, dp_delta=1e-6)
    s = make_aggregator(task)
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

    from fedrag.federation.privacy.central_dp import CentralDP

    assert type(s) is CentralDP and isinstance(s, DifferentialPrivacyClientSideFixedClipping)
    assert type(s.strategy).__name__ == "FedProx"
    assert (s.noise_multiplier, s.clipping_norm, s.num_sampled_clients) == (0.5, 0.2, 3)
    assert s.accountant is not None and s.accountant.get_privacy_spent().delta == 1e-6
    assert make_aggregator(FedTask(stage="ralt")).__class__.__name__ == "FedAvg"


def test_a_resumed_accountant_continues_the_runs_account():
    from fedrag.federation.server.aggregator import make_accountant

    task = FedTask(stage="ralt", dp_noise=0.8, min_sites=3, dp_delta=1e-6)
    before = _released(task, 2)
    resumed = make_accountant(task, before.state_dict())
    spent = resumed.get_privacy_spent()
    assert spent.num_releases == 2
    assert spent.epsilon == pytest.approx(_dp_accounting_epsilon(0.8, 2, 1e-6), rel=1e-9)
    assert make_accountant(FedTask(stage="ralt")) is None


def test_an_accountant_checkpointed_with_min_sites_as_its_population_resumes_with_the_same_account():
    """Before the accountant's population was `POPULATION` it was --min-sites; with no amplification
    by sampling it is a label, so a checkpoint of then resumes with the ε it had."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    from fedrag.federation.server.aggregator import make_accountant
    from fedrag.federation.privacy.central_dp import POPULATION

    task = FedTask(stage="ralt", dp_noise=0.8, min_sites=3, dp_delta=1e-6)
    old = RdpAccountant(PrivacyConfig(1e-6, 3, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION))
    old.compose(GaussianPrivacyEvent(0.8, sample_size=3, population_size=3), 2)
    state = old.state_dict()
    resumed = make_accountant(task, state)
    assert resumed.config.population_size == POPULATION and state["config"]["population_size"] == 3, "not edited in place"
    spent = resumed.get_privacy_spent()
    assert spent.num_releases == 2 and spent.epsilon == pytest.approx(_dp_accounting_epsilon(0.8, 2, 1e-6), rel=1e-9)
