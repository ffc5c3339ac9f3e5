"""Validation during a stage: on which questions (given, or carved out of the training
set to keep the best weights), every `eval_every` steps and after the last, and, with
`TrainConfig.keep_best`, which validated weights the stage ends with."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fedrag.data.types import Example
from fedrag.errors import FedragError
from fedrag.train.best import BestKeeper
from fedrag.train.config import TrainConfig
from fedrag.train.validate import carve_validation, validation_fn


@contextlib.contextmanager
def evaluating(rag):
    """`rag`'s encoders and generator in eval mode (no dropout), as `evaluate` measures them,
    for as long as the block runs; each module's mode is put back after it."""
    modules = [rag.retriever.query_encoder, rag.retriever.passage_encoder]
    modules += [rag.generator.model] if rag.generator is not None else []
    modes = [(m, m.training) for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, training in modes:
            m.train(training)


def _validated(evaluate_fn, rag, val) -> dict:
    with evaluating(rag):
        return evaluate_fn(rag, val)


class Validation:
    """A stage's validation questions `val`, `evaluate_fn(rag, val) -> metrics`, and the
    `BestKeeper` (`fedrag.train.best`) when the stage keeps its best weights.
    `carved`: the questions were set aside from the training examples."""

    def __init__(self, val: list[Example] | None, evaluate_fn, every: int | None, carved: bool = False):
        self.val, self.evaluate_fn, self.every, self.carved = val, evaluate_fn, every, carved
        self.keeper: BestKeeper | None = None

    @classmethod
    def prepare(cls, stage, rag, examples: list[Example], val, evaluate_fn, cfg: TrainConfig):
        """The examples to train on and the stage's validation. With `cfg.keep_best` and no
        `val`, a fifth of `examples` is set aside by gold title, and `evaluate_fn` defaults to
        retrieval metrics, with answers when the stage trains the generator."""
        carved = False
        if cfg.keep_best and not val:  # the best weights need questions they are not trained on: this run's own
            try:
                examples, val = carve_validation(examples, rag.store.passages, cfg.seed)
            except FedragError:
                raise FedragError(
                    f"stage {stage.name} keeps its best validated weights, and its {len(examples)} training questions "
                    "leave none to validate on: pass --val, or --keep-last"
                ) from None
            carved = True
        if cfg.keep_best and evaluate_fn is None:
            evaluate_fn = validation_fn("generator" in stage.trains, rag.top_k)
        return examples, cls(val, evaluate_fn, cfg.eval_every, carved)

    @property
    def active(self) -> bool:
        return bool(self.val and self.evaluate_fn)

    def keep_best(self, rag, cfg: TrainConfig, trains, out: Path | None, resumed: Path | None, start: int) -> None:
        """Start keeping the best weights (saved under `out`): those a `resumed` run kept,
        else the weights before any step, which are a candidate too."""
        self.keeper = BestKeeper(cfg.best_metric, trains, out)
        if resumed:
            self.keeper.load(resumed)
        if self.keeper.state is None:
            self.keeper.offer(rag, start, _validated(self.evaluate_fn, rag, self.val))

    def due(self, step: int) -> bool:
        """Whether the weights after `step` steps are validated."""
        return bool(self.active and self.every and step % self.every == 0)

    def run(self, rag, step: int) -> dict:
        """Validate the weights after `step` steps (offered to the keeper); the `val_` fields of its record."""
        metrics = _validated(self.evaluate_fn, rag, self.val)
        if self.keeper:
            self.keeper.offer(rag, step, metrics)
        return {f"val_{k}": v for k, v in metrics.items()}

    def finish(self, rag, stage: str, total: int) -> tuple[dict | None, dict | None]:
        """Validate the trained weights and, keeping the best, put the best back; the final
        record and what was kept (`step`, `metric`, `value`, `val_questions`, `carved`).
        `(None, None)` without validation questions or `evaluate_fn`."""
        if not self.active:
            return None, None
        metrics = _validated(self.evaluate_fn, rag, self.val)
        final = {"stage": stage, "step": total, **{f"val_{k}": v for k, v in metrics.items()}}
        best = None
        if self.keeper:
            self.keeper.offer(rag, total, metrics)
            best = {**self.keeper.restore(rag, total), "val_questions": len(self.val), "carved": self.carved}
            final["best_step"] = best["step"]
        return final, best
