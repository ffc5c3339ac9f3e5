"""The training loop shared by every stage, centrally and inside a Flower client."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from fedrag.data.types import Example
from fedrag.train import distributed
from fedrag.train.batch_size import resolve as resolve_batch_size
from fedrag.train.best import BestKeeper
from fedrag import _faults
from fedrag.train.checkpoint import export_optimizer_state, import_optimizer_state, load_checkpoint, save_checkpoint
from fedrag.train.config import TrainConfig
from fedrag.train.cost import Cost, CostMeter, param_count
from fedrag.train.precision import compute_dtype
from fedrag.train.protocol import Stage
from fedrag.train.state import freeze_except
from fedrag.train.validate import carve_validation, validation_fn

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


def _optimizer(params: dict[str, torch.nn.Parameter], cfg: TrainConfig):
    groups = []
    for side, lr in (("retriever.", cfg.lr_retriever), ("generator.", cfg.lr_generator)):
        ps = [p for n, p in params.items() if n.startswith(side)]
        if ps:
            groups.append({"params": ps, "lr": lr, "weight_decay": cfg.weight_decay})
    return torch.optim.AdamW(groups)


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
) -> StageResult:
    """Train `stage` on `examples` for `cfg.total_steps` optimizer steps.

    `reference` (named tensors) adds FedProx's `mu/2 · ||w - w_ref||²`. With
    `out_dir`, metrics go to `metrics.jsonl` and checkpoints (safetensors) to
    `checkpoint/`; `resume=True` continues from that checkpoint.
    `optimizer_state` (named tensors, see
    [`export_optimizer_state`][fedrag.train.checkpoint.export_optimizer_state]) starts AdamW
    from saved moments and is updated in place with the final ones: a federated site
    passes the same dict every round, so its optimizer continues instead of restarting.
    Under `torchrun` each process trains on its share of every batch (see
    [`fedrag.train.distributed`][fedrag.train.distributed]); only rank 0 writes to `out_dir`.
    With `cfg.keep_best` and no `val`, a fifth of `examples` is set aside by gold title
    to validate on (`fedrag.train.validate.carve_validation`), and `evaluate_fn` defaults
    to retrieval metrics, with answers when the stage trains the generator.
    """
    from fedrag.errors import DivergedError, FedragError

    if not examples:
        raise FedragError("no training examples")
    if not isinstance(stage, Stage):
        raise FedragError(f"{type(stage).__name__} is not a stage: it needs name, trains and loss(rag, batch)")
    world = distributed.world_size()
    dtype = compute_dtype(cfg.dtype, rag.retriever.device)
    cfg = resolve_batch_size(cfg, stage, rag, examples, dtype)  # auto: probed on the device
    if cfg.batch_size < world:
        raise FedragError(f"--batch-size {cfg.batch_size} is smaller than the {world} processes it is shared among")
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
    seed_everything(cfg.seed)
    params = freeze_except(rag, stage.trains)
    if cfg.gradient_checkpointing and rag.generator is not None and "generator" in stage.trains:
        rag.generator.enable_checkpointing()
    total = cfg.total_steps(len(examples))
    opt = _optimizer(params, cfg)
    from transformers import get_scheduler

    horizon = max(total, cfg.schedule_total or 0)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=int(cfg.warmup_ratio * horizon), num_training_steps=horizon)
    opt.zero_grad(set_to_none=True)  # a model trained before in this process keeps its last gradients
    for _ in range(cfg.schedule_offset):  # federated round r continues the schedule of rounds < r
        opt.step()  # no grads (cleared above): a no-op for AdamW, keeps torch's scheduler-order check quiet
        sched.step()
    if optimizer_state:
        import_optimizer_state(opt, params, optimizer_state)
    found = Path(out_dir) if out_dir else None  # every process resumes from it
    out = found if distributed.is_writer() else None  # rank 0 alone writes
    log = _Log(out, stage.name, cfg)
    batches = _batches(len(examples), cfg)
    start, prior = load_checkpoint(found, rag, opt, sched) if (resume and found) else (0, None)
    for _ in range(start * cfg.grad_accum):  # replay the data order up to the resumed step
        next(batches)
    earlier = log.truncate(start) if (resume and out) else []  # steps after the checkpoint are trained again
    keeper = None
    if cfg.keep_best:
        keeper = BestKeeper(cfg.best_metric, stage.trains, out)
        if resume and found:
            keeper.load(found)
        if keeper.state is None:  # the weights before any step are a candidate too
            keeper.offer(rag, start, evaluate_fn(rag, val))
    meter = CostMeter(
        stage.name, param_count(rag.retriever.query_encoder), param_count(rag.generator.model) if rag.generator is not None else 0
    )
    meter.cost.batch_size = cfg.batch_size
    ref = {n: t.to(p.device) for n, t in reference.items() for p in [params[n]]} if (reference and cfg.prox_mu) else None
    _set_modes(rag, stage.trains)
    device = rag.retriever.device
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if rag.generator is not None:
        old_chunk, rag.generator.score_batch_size = rag.generator.score_batch_size, cfg.score_batch_size
    # a run resumed at its last step trains none: its loss is the one it logged
    history, saved = earlier, 0
    loss_value = next((r["loss"] for r in reversed(earlier) if "loss" in r), float("nan"))
    bar = tqdm(total=total, initial=start, desc=stage.name, disable=not cfg.progress, leave=False)
    try:
        for step in range(start, total):
            t_step = time.perf_counter()  # to the record below: float(loss) and float(grad_norm) wait for the device
            opt.zero_grad(set_to_none=True)
            losses = []
            for _ in range(cfg.grad_accum):
                batch = distributed.shard([examples[i] for i in next(batches)])
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    res = stage.loss(rag, batch)
                loss = res.loss.float()
                if world > 1:  # this process's share of the global batch's mean; gradients are summed below
                    units = res.units or len(batch)
                    loss = loss * (units / distributed.total(units))
                if ref is not None:
                    loss = loss + cfg.prox_mu / 2 / world * sum(((params[n] - r) ** 2).sum() for n, r in ref.items())
                scaler.scale(loss / cfg.grad_accum).backward()
                losses.append(distributed.total(float(loss.detach())))
                meter.step(res, len(batch))
            distributed.sum_gradients(params)
            scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm or float("inf"))
            if not scaler.is_enabled() and not (math.isfinite(sum(losses)) and math.isfinite(float(grad_norm))):
                # float16's scaler skips such steps itself; otherwise this step would make the weights non-finite
                last = saved or start
                kept = f"; its last good checkpoint (step {last}) is kept" if last else "; no checkpoint was saved"
                raise DivergedError(
                    f"stage {stage.name} diverged at step {step + 1} (loss {sum(losses) / len(losses):.4g}, "
                    f"gradient norm {float(grad_norm):.4g}){kept}; lower the learning rate"
                )
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_value = sum(losses) / len(losses)
            seconds = time.perf_counter() - t_step
            record = {"stage": stage.name, "step": step + 1, "loss": loss_value, "lr": sched.get_last_lr()[0], "seconds": seconds}
            if val and evaluate_fn and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                metrics = evaluate_fn(rag, val)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                if keeper:
                    keeper.offer(rag, step + 1, metrics)
                _set_modes(rag, stage.trains)
            history.append(record)
            log.write(record)
            if out and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                so_far = meter.finish(step + 1 - start)  # the cost up to this checkpoint, a resume adds to it
                save_checkpoint(
                    out / "checkpoint",
                    rag,
                    stage.trains,
                    opt,
                    sched,
                    step + 1,
                    (prior.add(so_far) if prior else so_far).to_dict(),
                )
                saved = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            _faults.checkpoint("train-step")
        bar.close()
        opt.zero_grad(set_to_none=True)  # nothing stale for the next caller (and the memory back)
        rag.retriever.query_encoder.eval()
        if rag.generator is not None:
            rag.generator.model.eval()
        best = None
        if val and evaluate_fn:
            metrics = evaluate_fn(rag, val)
            final = {"stage": stage.name, "step": total, **{f"val_{k}": v for k, v in metrics.items()}}
            if keeper:
                keeper.offer(rag, total, metrics)
                best = {**keeper.restore(rag, total), "val_questions": len(val), "carved": carved}
                final["best_step"] = best["step"]
            history.append(final)
            log.write(final)
    finally:  # an error or an interrupt too: the bar, the trackers and the scoring chunk as they were
        bar.close()
        log.close()
        if rag.generator is not None:
            rag.generator.score_batch_size = old_chunk
    cost = meter.finish(total - start)
    if world > 1:  # the run's work, every process's share of it
        for f in ("examples", "retriever_tokens", "generator_tokens", "forward_passes", "backward_passes", "flops"):
            setattr(cost, f, type(getattr(cost, f))(distributed.total(getattr(cost, f))))
        cost = cost.with_throughput()
    cost = prior.add(cost) if prior else cost  # a resumed run reports the whole run's cost
    if optimizer_state is not None:
        optimizer_state.clear()
        optimizer_state.update(export_optimizer_state(opt, params))
    return StageResult(stage.name, total, loss_value, history, cost, best)


class _Log:
    """metrics.jsonl, and the experiment trackers `cfg.report_to` names (one run per stage)."""

    def __init__(self, out: Path | None, stage: str, cfg: TrainConfig):
        from dataclasses import asdict

        from fedrag.train.tracking import Tracker

        self.path = out / "metrics.jsonl" if out else None
        if out:
            out.mkdir(parents=True, exist_ok=True)
        run_dir = Path(cfg.tracking_dir) / stage if cfg.tracking_dir else (out or Path("fedrag-runs"))
        self.tracker = Tracker(cfg.report_to, run_dir, f"{cfg.run_name or 'fedrag'}/{stage}", {"stage": stage, **asdict(cfg)})

    def truncate(self, step: int) -> list[dict]:
        """Drop records after `step` (a resumed run trains them again); return the rest."""
        if not (self.path and self.path.is_file()):
            return []
        keep = [r for r in map(json.loads, self.path.read_text().splitlines()) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        return keep

    def write(self, record: dict) -> None:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        self.tracker.log({k: v for k, v in record.items() if k != "step"}, record["step"])

    def close(self) -> None:
        self.tracker.close()
