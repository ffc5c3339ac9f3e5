"""Round recording as a strategy wrapper, in the style of Flower's DP wrappers: it
implements the Strategy interface by delegating each of its methods explicitly to the
wrapped strategy (nothing else is forwarded) and adds these things, without patching any method.

* The sites evaluate only every `task.run.evaluate_every` rounds of a phase and at its
  last round (never when 0). `done` is the rounds the phase finished before a resume:
  Flower counts this call's rounds from 1, the task counts the phase's.
* The aggregated train/evaluate metrics of round `r` (and each site's own train
  metrics, under `site_metrics`) land in `metrics[r]` as soon as they exist, so
  `rounds.json` and the checkpoint get them that round (Flower hands them back only
  when the whole `start()` returns).
* A round with fewer usable train replies than `task.aggregation.min_sites` ends the run at once
  (`quorum` raises), before Flower would aggregate nothing and go on to an evaluate
  round that waits out the timeout a second time.
* The aggregated tensors keep the phase's dtypes (`dtypes`): FedAdam/FedYogi compute in
  float64, and their result would otherwise travel at twice the size next round (the
  audit refuses tensors whose dtype is not the phase's).
"""

from __future__ import annotations

from typing import Callable

from flwr.serverapp.strategy import Strategy

from fedrag.federation.wire.messages import METRICS
from fedrag.federation.task import FedTask


class RoundRecorder(Strategy):
    def __init__(
        self,
        strategy: Strategy,
        task: FedTask,
        done: int,
        metrics: dict,
        dtypes: dict | None = None,
        quorum: Callable[[int, int], None] | None = None,
    ):
        super().__init__()
        self.strategy, self.task, self.done, self.metrics = strategy, task, done, metrics
        self.dtypes = dtypes or {}  # {tensor name: torch dtype}
        self.quorum = quorum  # (server round, usable replies) -> None, or raises

    def __repr__(self) -> str:
        return f"RoundRecorder({self.strategy!r})"

    def _record(self, server_round: int, prefix: str, metrics) -> None:
        if metrics:
            self.metrics.setdefault(server_round, {}).update({f"{prefix}{k}": float(v) for k, v in metrics.items()})

    def configure_train(self, server_round, arrays, config, grid):
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        if self.quorum is not None:
            self.quorum(server_round, sum(not r.has_error() for r in replies))
        sites = {
            str(r.metadata.src_node_id): {k: float(v) for k, v in r.content[METRICS].items()}
            for r in replies
            if not r.has_error() and METRICS in r.content.metric_records
        }
        if sites:  # each site's own figures, keyed by its (stable) Flower node id
            self.metrics.setdefault(server_round, {})["site_metrics"] = sites
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        self._record(server_round, "clients_", metrics)
        if arrays is not None and any(
            str(a.dtype) != str(self.dtypes.get(n, a.dtype)).replace("torch.", "") for n, a in arrays.items()
        ):
            from fedrag.federation.wire.tensors import from_record, to_record

            arrays = to_record({n: t.to(self.dtypes.get(n, t.dtype)) for n, t in from_record(arrays).items()})
        return arrays, metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        rnd = self.done + server_round
        every = self.task.run.evaluate_every
        if every == 0 or (rnd % every and rnd != self.task.training.rounds):
            return []
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        self._record(server_round, "clients_eval_", metrics)
        return metrics

    def summary(self) -> None:
        self.strategy.summary()
