"""The Flower strategy a federated phase runs: a stock aggregator (FedAvg, FedProx,
FedAdam, FedYogi), wrapped in central DP when asked (Flower's client-side-clipping DP, as
[`CentralDP`][fedrag.federation.privacy.central_dp.CentralDP] adapts it), reporting to one RDP
accountant for the whole run."""

from __future__ import annotations

from fedrag.federation.task import FedTask


def make_accountant(task: FedTask, state: dict | None = None):
    """One RDP accountant for the whole run (every phase's and round's release composes
    into it), restored from a checkpoint's `state` on resume; None without DP. Each round
    is one Gaussian release at the task's multiplier, with no amplification by sampling."""
    if not task.dp_enabled:
        return None
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    from fedrag.federation.privacy.central_dp import POPULATION, current_state

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=task.privacy.dp_delta,
            population_size=POPULATION,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    if state:
        accountant.load_state_dict(current_state(state))
    return accountant


# Flower's strategy class for each `Aggregator` choice (tests hold the keys to the Literal)
FLOWER_CLASSES = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "fedyogi": "FedYogi"}


def make_aggregator(task: FedTask, accountant=None, record: dict | None = None):
    """The Flower strategy for `task` (stock Flower classes), wrapped in central DP
    ([`CentralDP`][fedrag.federation.privacy.central_dp.CentralDP]: reporting to the run's
    `accountant`, each release's sites and noise to `record`) if asked."""
    from flwr.serverapp import strategy as fs

    common = dict(
        fraction_train=task.aggregation.fraction,
        min_train_nodes=task.aggregation.min_sites,
        min_available_nodes=task.aggregation.min_sites,
        fraction_evaluate=0.0 if task.run.eval_qa else task.aggregation.fraction,
        min_evaluate_nodes=task.aggregation.min_sites,
    )
    cls = getattr(fs, FLOWER_CLASSES[task.aggregation.aggregator])
    extra = {
        "fedprox": {"proximal_mu": task.aggregation.proximal_mu},
        "fedadam": {"eta": task.aggregation.server_lr},
        "fedyogi": {"eta": task.aggregation.server_lr},
    }.get(task.aggregation.aggregator, {})
    strategy = cls(**common, **extra)
    if task.dp_enabled:
        import numpy as np

        # Flower's DP wrapper draws its noise from numpy's global RNG, which fedrag's training
        # loop seeds from the task's seed: in a process that trained before serving, the
        # noise would be replayable by anyone who knows the seed. Fresh OS entropy instead.
        np.random.seed()
        from fedrag.federation.privacy.central_dp import CentralDP

        strategy = CentralDP(
            strategy,
            task.privacy.dp_noise,
            task.privacy.dp_clip,
            task.aggregation.min_sites,
            accountant or make_accountant(task),
            record=record,
        )
    return strategy
