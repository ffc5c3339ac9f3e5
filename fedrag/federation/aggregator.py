"""The Flower strategy a federated phase runs: a stock aggregator (FedAvg, FedProx,
FedAdam, FedYogi), wrapped in Flower's client-side-clipping DP when asked, reporting to
one RDP accountant for the whole run."""

from __future__ import annotations

from fedrag.federation.task import FedTask


def make_accountant(task: FedTask, state: dict | None = None):
    """One RDP accountant for the whole run (every phase's and round's release composes
    into it), restored from a checkpoint's `state` on resume; None without DP."""
    if not task.dp_enabled:
        return None
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=task.dp_delta,
            population_size=task.min_sites,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    if state:
        accountant.load_state_dict(state)
    return accountant


# Flower's strategy class for each `Aggregator` choice (tests hold the keys to the Literal)
FLOWER_CLASSES = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "fedyogi": "FedYogi"}


def make_aggregator(task: FedTask, accountant=None):
    """The Flower strategy for `task` (stock Flower classes), wrapped in Flower's
    client-side-clipping DP (reporting to the run's `accountant`) if asked."""
    from flwr.serverapp import strategy as fs

    common = dict(
        fraction_train=task.fraction,
        min_train_nodes=task.min_sites,
        min_available_nodes=task.min_sites,
        fraction_evaluate=0.0 if task.eval_qa else task.fraction,
        min_evaluate_nodes=task.min_sites,
    )
    cls = getattr(fs, FLOWER_CLASSES[task.aggregator])
    extra = {
        "fedprox": {"proximal_mu": task.proximal_mu},
        "fedadam": {"eta": task.server_lr},
        "fedyogi": {"eta": task.server_lr},
    }.get(task.aggregator, {})
    strategy = cls(**common, **extra)
    if task.dp_enabled:
        import numpy as np

        # Flower's DP wrapper draws its noise from numpy's global RNG, which fedrag's training
        # loop seeds from the task's seed: in a process that trained before serving, the
        # noise would be replayable by anyone who knows the seed. Fresh OS entropy instead.
        np.random.seed()
        strategy = fs.DifferentialPrivacyClientSideFixedClipping(
            strategy, task.dp_noise, task.dp_clip, task.min_sites, accountant=accountant or make_accountant(task)
        )
    return strategy
