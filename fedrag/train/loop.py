"""The training loop shared by every stage, centrally and inside a Flower client."""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from fedrag import _faults
from fedrag.data.types import Example
from fedrag.train import distributed
from fedrag.train.batch_size import resolve as resolve_batch_size
from fedrag.train.config import TrainConfig
from fedrag.train.cost import Cost, CostMeter, param_count
from fedrag.train.fedprox import ProximalTerm
from fedrag.train.metrics_log import MetricsLog
from fedrag.train.optimizer import RoundWindow, hand_back_moments, optimizer_and_schedule
from fedrag.train.precision import MixedPrecision, compute_dtype
from fedrag.train.protocol import Stage
from fedrag.train.resume import Checkpoints
from fedrag.train.state import freeze_except
from fedrag.train.validation_schedule import Validation

if TYPE_CHECKING:
    from fedrag.rag import RAGSystem


@dataclass
class StageResult:
    """What one stage's training returns: its name, the optimizer steps taken, the last
    loss, the logged history (one dict per logged step) and what it cost."""

    stage: str
    steps: int
    final_loss: float
    history: list[dict]
    cost: Cost
    # with TrainConfig.keep_best: the validated step kept (step, metric, value, val_questions, carved)
    best: dict | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(n: int, cfg: TrainConfig):
    """Endless seeded shuffles of `range(n)` cut into batches."""
    gen = torch.Generator().manual_seed(cfg.seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n - n % cfg.batch_size or n, cfg.batch_size):
            yield order[i : i + cfg.batch_size]


def _set_modes(rag, trains) -> None:
    rag.retriever.query_encoder.train("retriever" in trains)
    rag.retriever.passage_encoder.eval()
    if rag.generator is not None:
        rag.generator.model.train("generator" in trains)


def train_stage(
    stage: Stage,
    rag: RAGSystem,
    examples: list[Example],
    cfg: TrainConfig,
    val: list[Example] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    reference: dict | None = None,
    evaluate_fn=None,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    *,
    prox_mu: float = 0.0,
    window: RoundWindow | None = None,
) -> StageResult:
    """Train `stage` on `examples` for `cfg.total_steps` optimizer steps.

    `reference` (named tensors) with `prox_mu` adds FedProx's `mu/2 · ||w - w_ref||²`
    ([`ProximalTerm`][fedrag.train.fedprox.ProximalTerm]); a federated round trains inside
    its phase's schedule ([`RoundWindow`][fedrag.train.optimizer.RoundWindow]). With `out_dir`, metrics
    go to `metrics.jsonl`, checkpoints (safetensors) to `checkpoint/`, and `resume=True`
    continues from there ([`Checkpoints`][fedrag.train.resume.Checkpoints]).
    `optimizer_state` ([`export_optimizer_state`][fedrag.train.checkpoint.export_optimizer_state]'s
    named tensors) starts AdamW from saved moments and is updated in place with the final
    ones: a site passing the same dict every round continues its optimizer.
    Under `torchrun` each process trains on its share of every batch (see
    [`fedrag.train.distributed`][fedrag.train.distributed]); only rank 0 writes to `out_dir`.
    With `cfg.keep_best` and no `val`, a fifth of `examples` is set aside by gold title
    to validate on, and `evaluate_fn` defaults to retrieval metrics, with answers when the
    stage trains the generator ([`Validation`][fedrag.train.validation_schedule.Validation]).
    """
    cfg, dtype = _checked(stage, rag, examples, cfg)
    examples, validation = Validation.prepare(stage, rag, examples, val, evaluate_fn, cfg)
    seed_everything(cfg.seed)
    params = freeze_except(rag, stage.trains)
    if cfg.gradient_checkpointing and rag.generator is not None and "generator" in stage.trains:
        rag.generator.enable_checkpointing()
    total = cfg.total_steps(len(examples))
    opt, sched = optimizer_and_schedule(params, cfg, total, optimizer_state, window)
    found = Path(out_dir) if out_dir else None  # every process resumes from it
    out = found if distributed.is_writer() else None  # rank 0 alone writes
    log = MetricsLog(out, stage.name, cfg)
    batches = _batches(len(examples), cfg)
    precision = MixedPrecision(rag.retriever.device, dtype)  # float16's loss scale is checkpointed too
    checkpoints = Checkpoints(found, out, cfg.checkpoint_every, precision.scaler)
    start = checkpoints.resume(rag, opt, sched, batches, cfg.grad_accum) if resume else 0
    history = log.truncate(start) if (resume and out) else []  # steps after the checkpoint are trained again
    if cfg.keep_best:
        validation.keep_best(rag, cfg, stage.trains, out, found if resume else None, start)
    meter = _meter(stage, rag, cfg)
    prox = ProximalTerm.of(reference, params, prox_mu, distributed.world_size())
    _set_modes(rag, stage.trains)
    take_step = _Step(stage, rag, examples, batches, cfg, params, opt, sched, precision, prox, meter)
    bar = tqdm(total=total, initial=start, desc=stage.name, disable=not cfg.progress, leave=False)
    # an error or an interrupt too: the bar, the trackers and the scoring chunk as they were
    with _scoring_chunk(rag, cfg.score_batch_size), contextlib.closing(log), contextlib.closing(bar):
        for step in range(start + 1, total + 1):  # `step`: the optimizer steps taken once this one is
            record = take_step(step, checkpoints.last_good)
            if validation.due(step):
                record.update(validation.run(rag, step))  # in eval mode; the training modes are put back
            history.append(record)
            log.write(record)
            if checkpoints.due(step):
                checkpoints.save(rag, stage.trains, opt, sched, step, meter)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            _faults.checkpoint("train-step")
        bar.close()
        opt.zero_grad(set_to_none=True)  # nothing stale for the next caller (and the memory back)
        _set_modes(rag, ())
        final, best = validation.finish(rag, stage.name, total)
        if final:
            history.append(final)
            log.write(final)
    cost = checkpoints.whole_cost(distributed.total_cost(meter.finish(total - start)))  # a resumed run: the whole run's
    if optimizer_state is not None:
        hand_back_moments(opt, params, optimizer_state)
    # a run resumed at its last step trains none: its loss is the one it logged
    loss_value = next((r["loss"] for r in reversed(history) if "loss" in r), float("nan"))
    return StageResult(stage.name, total, loss_value, history, cost, best)


def _checked(stage, rag, examples, cfg: TrainConfig) -> tuple[TrainConfig, torch.dtype]:
    """`cfg` with its batch size resolved (`auto`: probed on the device) and the autocast
    dtype, once the arguments are checked."""
    from fedrag.errors import FedragError

    if not examples:
        raise FedragError("no training examples")
    if not isinstance(stage, Stage):
        raise FedragError(f"{type(stage).__name__} is not a stage: it needs name, trains and loss(rag, batch)")
    world = distributed.world_size()
    dtype = compute_dtype(cfg.dtype, rag.retriever.device)
    cfg = resolve_batch_size(cfg, stage, rag, examples, dtype)
    if cfg.batch_size < world:
        raise FedragError(f"--batch-size {cfg.batch_size} is smaller than the {world} processes it is shared among")
    return cfg, dtype


@contextlib.contextmanager
def _scoring_chunk(rag, size: int | None):
    """The generator scores `size` rows a forward pass for the block (`cfg.score_batch_size`)."""
    if rag.generator is None:
        yield
        return
    old, rag.generator.score_batch_size = rag.generator.score_batch_size, size
    try:
        yield
    finally:
        rag.generator.score_batch_size = old


def _meter(stage, rag, cfg: TrainConfig) -> CostMeter:
    generator_params = param_count(rag.generator.model) if rag.generator is not None else 0
    meter = CostMeter(stage.name, param_count(rag.retriever.query_encoder), generator_params)
    meter.cost.batch_size = cfg.batch_size
    return meter


@dataclass
class _Step:
    """One optimizer step: the forward and backward passes of `cfg.grad_accum` batches (this
    process's share of each), their gradients summed over the processes and clipped, and
    the update."""

    stage: Stage
    rag: RAGSystem
    examples: list[Example]
    batches: Iterator[list[int]]
    cfg: TrainConfig
    params: dict[str, torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: object
    precision: MixedPrecision
    prox: ProximalTerm | None
    meter: CostMeter

    def __call__(self, step: int, last_good: int) -> dict:
        """Take optimizer step `step` (1-based); its record: the loss (averaged over the
        batches, summed over the processes), the learning rate and the seconds it took.
        `last_good`: the step of the checkpoint a divergence leaves, to say so."""
        t_step = time.perf_counter()  # to the record below: float(loss) and float(grad_norm) wait for the device
        losses, grad_norm = self._backward()
        if not self.precision.skips_nonfinite and not (math.isfinite(sum(losses)) and math.isfinite(float(grad_norm))):
            # float16's scaler skips such steps itself; otherwise this step would make the weights non-finite
            raise _diverged(self.stage.name, step, losses, grad_norm, last_good)
        self.precision.step(self.opt)
        self.sched.step()
        loss = sum(losses) / len(losses)
        seconds = time.perf_counter() - t_step
        return {"stage": self.stage.name, "step": step, "loss": loss, "lr": self.sched.get_last_lr()[0], "seconds": seconds}

    def _backward(self) -> tuple[list[float], torch.Tensor]:
        """Each batch's loss (summed over the processes) and the gradient norm before clipping."""
        cfg, precision = self.cfg, self.precision
        self.opt.zero_grad(set_to_none=True)
        losses = []
        for _ in range(cfg.grad_accum):
            batch = distributed.shard([self.examples[i] for i in next(self.batches)])
            with precision.autocast():
                res = self.stage.loss(self.rag, batch)
            # this process's share of the global batch's mean; gradients are summed below
            loss = distributed.share_of_mean(res.loss.float(), res.units or len(batch))
            if self.prox is not None:
                loss = loss + self.prox()
            precision.backward(loss / cfg.grad_accum)
            losses.append(distributed.total(float(loss.detach())))
            self.meter.step(res, len(batch))
        distributed.sum_gradients(self.params)
        precision.unscale(self.opt)
        return losses, torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm or float("inf"))


def _diverged(stage: str, step: int, losses: list[float], grad_norm, last_good: int):
    from fedrag.errors import DivergedError

    kept = f"; its last good checkpoint (step {last_good}) is kept" if last_good else "; no checkpoint was saved"
    return DivergedError(
        f"stage {stage} diverged at step {step} (loss {sum(losses) / len(losses):.4g}, "
        f"gradient norm {float(grad_norm):.4g}){kept}; lower the learning rate"
    )
