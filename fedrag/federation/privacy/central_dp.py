"""Central differential privacy on the server: Flower's client-side-clipping DP wrapper with
the guarantee fedrag reports made true whatever the sites and their data sizes.

Each site clips its update to C; the server averages the updates and adds N(0, (zC / n)²)
to the mean, the Gaussian mechanism at multiplier z on the sum, *provided* that every site's
clipped update enters the mean with weight 1/n and that n is the number of updates averaged.
Flower's wrapper takes n from its constructor and its accounted mode refuses, mid-round,
sites of unequal example counts or a round that sampled more sites than that n. fedrag's
[`CentralDP`][CentralDP] instead

* weighs every site's update equally (1/n) whatever its example count, and
* takes n each round from the sites actually aggregated: the sampled sites
  (`--fraction` of those connected, at least `--min-sites`) that replied usably.

The noise (std zC/n on the mean) and the round's privacy event (Gaussian at z, no
amplification by sampling) are therefore those of the release made.
"""

from __future__ import annotations

import copy

from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_stdv

# The accountant's population. With no amplification by sampling (the ε fedrag reports) Flower
# keeps it as a label only, but requires every round's sample to fit in it; how many sites may
# connect is not known in advance, so it is the largest count the accountant's state stores.
POPULATION = 2**31 - 1
NO_AMPLIFICATION = "no-amplification"


def current_state(state: dict) -> dict:
    """An accountant state as this version builds it: one checkpointed when the population was
    `--min-sites` gets `POPULATION` (the same ε: with no amplification the population is a label)."""
    config = state.get("config") or {}
    if config.get("sampling_method") != NO_AMPLIFICATION or config.get("population_size") == POPULATION:
        return state  # anything else is Flower's to accept or refuse
    state = copy.deepcopy(state)
    state["config"]["population_size"] = POPULATION
    for composition in state.get("compositions", []):
        composition["event"]["population_size"] = POPULATION
    return state


class CentralDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's `DifferentialPrivacyClientSideFixedClipping` (sites clip with its
    `fixedclipping_mod`; the server adds Gaussian noise to the aggregate and composes the
    release into the run's accountant), with every site's update weighted equally and n,
    the noise's divisor and the round's sample size, the number of sites aggregated that
    round. The train metrics are averaged over the sites with equal weights too.

    `record`: `{server round: {...}}` that receives each release's `dp_sites` (n) and
    `dp_noise_std` (zC/n, the std added to every value of the mean)."""

    def __init__(self, strategy, noise_multiplier: float, clipping_norm: float, min_sites: int, accountant, record=None):
        super().__init__(strategy, noise_multiplier, clipping_norm, min_sites, accountant=accountant)
        self.record = record if record is not None else {}

    def __repr__(self) -> str:
        return f"CentralDP({self.strategy!r})"

    def configure_train(self, server_round, arrays, config, grid):
        # as Flower's wrapper, less its accounting: the round's n is known once the replies are in
        config[KEY_CLIPPING_NORM] = self.clipping_norm
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        """The mean of the usable replies' clipped updates, each weighted 1/n, plus N(0, (zC/n)²)
        per value, accounted as one Gaussian release at z. A failed reply is not aggregated
        (the round's quorum, `--min-sites`, was checked before)."""
        usable = [r for r in replies if not r.has_error()]
        if not usable:
            return None, None
        key = self.strategy.weighted_by_key
        for reply in usable:  # the server's own copy of the reply, read once more, by the aggregation below
            for metrics in reply.content.metric_records.values():
                if key in metrics:
                    metrics[key] = 1  # the site's own count is in rounds.json's site_metrics already
        self.num_sampled_clients = len(usable)
        self._prepare_accounting(server_round, usable)  # the release's event, at this round's n
        arrays, metrics = super().aggregate_train(server_round, usable)
        if arrays is not None:
            std = compute_stdv(self.noise_multiplier, self.clipping_norm, len(usable))
            self.record.setdefault(server_round, {}).update(dp_sites=len(usable), dp_noise_std=std)
        return arrays, metrics
