"""Resuming a stage: the checkpoint an interrupted run continues from, and the checkpoints
a run leaves every `checkpoint_every` steps for the next one to continue from."""

from __future__ import annotations

from pathlib import Path

from fedrag.train.checkpoint import load_checkpoint, save_checkpoint
from fedrag.train.cost import Cost, CostMeter


class Checkpoints:
    """A stage's checkpoints under `found/checkpoint` (read by every process) and
    `out/checkpoint` (written by rank 0 alone; `out` is None elsewhere and without an output
    directory). The cost saved with a checkpoint is the whole run's up to it, so a resumed
    run reports the cost of all its runs together. `scaler`: float16's `GradScaler`, whose
    loss scale and growth count a resumed run continues from."""

    def __init__(self, found: Path | None, out: Path | None, every: int | None, scaler=None):
        self.found, self.out, self.every, self.scaler = found, out, every, scaler
        self.start = 0  # the step the run starts after: a resumed checkpoint's
        self.prior: Cost | None = None  # the cost of the runs before this one
        self.saved = 0  # the step of this run's last checkpoint

    def resume(self, rag, opt, sched, batches, grad_accum: int) -> int:
        """Load the checkpoint into `rag`, `opt`, `sched` and the random streams, and draw
        the `batches` its steps drew, so the data order goes on as it would have; returns
        its step (0 without one)."""
        if self.found:
            self.start, self.prior = load_checkpoint(self.found, rag, opt, sched, self.scaler)
        for _ in range(self.start * grad_accum):
            next(batches)
        return self.start

    def due(self, step: int) -> bool:
        """Whether a checkpoint is written after `step` steps."""
        return bool(self.out and self.every and step % self.every == 0)

    def save(self, rag, trains, opt, sched, step: int, meter: CostMeter) -> None:
        so_far = meter.finish(step - self.start)  # the cost up to this checkpoint, a resume adds to it
        cost = self.whole_cost(so_far).to_dict()
        save_checkpoint(self.out / "checkpoint", rag, trains, opt, sched, step, cost, self.scaler)
        self.saved = step

    @property
    def last_good(self) -> int:
        """The step of the newest checkpoint on disk from this run or the one it resumed (0: none)."""
        return self.saved or self.start

    def whole_cost(self, cost: Cost) -> Cost:
        """`cost` of this run with that of the runs it resumed."""
        return self.prior.add(cost) if self.prior else cost
