"""``fedrag train`` and ``fedrag search-lr``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from fedrag.cli.options import DEVICE, GENERATOR, RETRIEVER, app, choice_option, field_option
from fedrag.errors import FedragError
from fedrag.models import Quantize
from fedrag.strategies.library import StrategyName, TwoPhaseLoss, TwoPhaseOrder
from fedrag.train import TrainConfig

StageName = Literal["contrastive", "lsr", "ralt", "rag-sequence", "rag-token"]
RaltMode = Literal["all-in-one", "per-passage"]

STRATEGY = choice_option(None, "--strategy", StrategyName, "a named strategy (or --stage)")
STAGE = choice_option(None, "--stage", StageName, "a single stage (or --strategy)")
CORPUS = typer.Option(..., "--corpus", help="corpus JSONL")
TRAIN = typer.Option(..., "--train", help="training QA JSONL")
VAL = typer.Option(None, "--val", help="validation QA JSONL")
TOP_K = typer.Option(3, "--top-k", min=1, help="passages retrieved per question")
LORA = typer.Option(True, "--lora/--full", help="LoRA adapter (default) or full fine-tuning of the generator")
RETRIEVER_LORA = typer.Option(False, "--retriever-lora", help="a LoRA adapter on the query encoder instead of all its "
                              "weights (federated: only the adapter travels); saved merged")
LIMIT = typer.Option(None, "--limit", min=1, help="use only the first N training examples")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing --out directory whole")
RALT_MODE = choice_option("all-in-one", "--ralt-mode", RaltMode, "RALT: all passages in one prompt, or one example per passage")
TWO_PHASE_LOSS = choice_option("rag-sequence", "--two-phase-loss", TwoPhaseLoss, "two-phase: the retriever phase's loss")
TWO_PHASE_ORDER = choice_option("generator-first", "--two-phase-order", TwoPhaseOrder, "two-phase: which phase runs first")


def load_inputs(corpus: str, train: str, val: str | None, limit: int | None, val_limit: int | None = None):
    from fedrag.data import check_gold_ids, load_corpus, load_qa

    passages = load_corpus(corpus)
    train_ex = load_qa(train, limit=limit)
    val_ex = load_qa(val, limit=val_limit) if val else None
    check_gold_ids(train_ex, passages, train)
    if val_ex:
        check_gold_ids(val_ex, passages, val)
    return passages, train_ex, val_ex


def needs_generator(plan) -> bool:
    return "generator" in plan.trains or any(p.stage.name != "contrastive" for p in plan.phases)


def given(ctx: typer.Context, cls) -> tuple[str, ...]:
    """The fields of ``cls`` whose options were given on the command line: a stage's own
    defaults never replace them (``TrainConfig.explicit``)."""
    from dataclasses import fields

    from click.core import ParameterSource

    untracked = ("progress", "report_to", "run_name", "tracking_dir", "explicit")  # they change no weight
    return tuple(f.name for f in fields(cls) if f.name not in untracked
                 and ctx.get_parameter_source(f.name) not in (None, ParameterSource.DEFAULT))


@app.command()
def train(ctx: typer.Context, strategy: Optional[str] = STRATEGY, stage: Optional[str] = STAGE, corpus: str = CORPUS, train: str = TRAIN,
          val: Optional[str] = VAL, retriever: str = RETRIEVER, generator: str = GENERATOR,
          out: Path = typer.Option(..., "--out"), overwrite: bool = OVERWRITE,
          steps: Optional[int] = field_option(TrainConfig, "steps"), epochs: float = field_option(TrainConfig, "epochs"),
          lr_generator: float = field_option(TrainConfig, "lr_generator"),
          lr_retriever: float = field_option(TrainConfig, "lr_retriever"), top_k: int = TOP_K, lora: bool = LORA,
          seed: int = field_option(TrainConfig, "seed"), batch_size: int = field_option(TrainConfig, "batch_size"),
          grad_accum: int = field_option(TrainConfig, "grad_accum"),
          limit: Optional[int] = LIMIT, val_limit: Optional[int] = typer.Option(None, "--val-limit"),
          scheduler: str = field_option(TrainConfig, "scheduler"), warmup_ratio: float = field_option(TrainConfig, "warmup_ratio"),
          eval_every: int = field_option(TrainConfig, "eval_every"), checkpoint_every: int = field_option(TrainConfig, "checkpoint_every"),
          gradient_checkpointing: bool = field_option(TrainConfig, "gradient_checkpointing"),
          dtype: str = field_option(TrainConfig, "dtype"),
          score_batch_size: Optional[int] = field_option(TrainConfig, "score_batch_size"),
          report_to: str = field_option(TrainConfig, "report_to"), run_name: str = field_option(TrainConfig, "run_name"),
          retriever_lora: bool = RETRIEVER_LORA,
          quantize: str = choice_option("none", "--quantize", Quantize, "4bit/8bit: QLoRA on a bitsandbytes base (CUDA GPU only)"),
          ralt_mode: str = RALT_MODE, two_phase_loss: str = TWO_PHASE_LOSS, two_phase_order: str = TWO_PHASE_ORDER,
          train_passages: Optional[bool] = typer.Option(None, "--train-passages/--query-only", help="contrastive or lsr stage: also train the passage encoder (re-encodes the store); default: the stage's (on for contrastive)"),
          device: str = DEVICE):
    """Fine-tune with a strategy (or one stage); writes DIR/retriever, DIR/generator, DIR/cost.json, DIR/metrics.jsonl."""
    from dataclasses import asdict

    from fedrag._io import check_out, file_digest, resumable_dir
    from fedrag.pipeline import build_training_rag, resolve_device
    from fedrag.strategies import plan_from_names, save_outputs, total_cost
    from fedrag.strategies.base import drop_resume_state
    from fedrag.train.validate import validation_fn

    plan = plan_from_names(strategy, stage, top_k, ralt_mode, two_phase_loss, two_phase_order, train_passages)
    cfg = TrainConfig(steps=steps, epochs=epochs, lr_generator=lr_generator, lr_retriever=lr_retriever, seed=seed,
                      explicit=given(ctx, TrainConfig),
                      batch_size=batch_size, grad_accum=grad_accum, scheduler=scheduler, warmup_ratio=warmup_ratio,
                      eval_every=eval_every, checkpoint_every=checkpoint_every,
                      gradient_checkpointing=gradient_checkpointing, dtype=dtype, score_batch_size=score_batch_size,
                      report_to=report_to, run_name=run_name or out.name, progress=sys.stderr.isatty())
    check_out(out, "train", overwrite)  # before anything loads
    _, train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    # what an interrupted run must match to be continued: the settings and the data's content
    identity = {"plan": {"strategy": strategy, "stage": stage, "top_k": top_k, "ralt_mode": ralt_mode,
                         "two_phase_loss": two_phase_loss, "two_phase_order": two_phase_order,
                         "shared_retriever": plan.shared_retriever},
                "models": {"retriever": retriever, "generator": generator, "lora": lora, "retriever_lora": retriever_lora,
                           "quantize": quantize},
                "train": [{k: v for k, v in asdict(p.config(cfg)).items()  # what each phase trains with
                           if k not in ("progress", "report_to", "run_name", "tracking_dir", "explicit")} for p in plan.phases],
                "data": {"corpus": file_digest(corpus), "train": file_digest(train), "val": file_digest(val) if val else None,
                         "limit": limit, "val_limit": val_limit}}
    # the models load before the run's work directory exists: a bad model name leaves nothing to resume
    rag = build_training_rag(corpus, retriever, generator if needs_generator(plan) else "none", lora, top_k,
                             resolve_device(device), seed, shared_retriever=plan.shared_retriever, quantize=quantize,
                             retriever_lora=retriever_lora)
    with resumable_dir(out, "train", identity, overwrite, {"strategy": plan.name},
                       log=lambda m: typer.echo(f"fedrag: {m}", err=True)) as (tmp, resumed):
        evaluate_fn = validation_fn("generator" in plan.trains, top_k) if val_ex else None
        results = plan.run(rag, train_ex, cfg, val=val_ex, out_dir=tmp, evaluate_fn=evaluate_fn, resume=resumed,
                           log=lambda m: typer.echo(f"fedrag: {m}", err=True))
        extra = {"config": {**asdict(cfg), "phases": [asdict(p.config(cfg)) for p in plan.phases]}}
        if plan.shared_retriever:  # the passage encoder trained: the re-encoded store goes with it
            extra["reencode"] = {"reencoded_passages": len(rag.store)}
            rag.store.save(tmp / "index")
        save_outputs(rag, tmp, results, plan.name, extra, decoding=plan.decoding)
        drop_resume_state(tmp)
    summary = total_cost(results, plan.name)["total"]
    typer.echo(json.dumps({"strategy": plan.name, "out": str(out), "steps": summary["steps"],
                           "wall_s": round(summary["wall_s"], 1), "flops": summary["flops"],
                           "final_loss": [round(r.final_loss, 4) for r in results]}))


def floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise FedragError(f"expected comma-separated numbers, got '{text}'") from None
    import math

    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise FedragError(f"expected positive, finite learning rates, got '{text}'")
    return values


@app.command("search-lr")
def search_lr(ctx: typer.Context, strategy: str = choice_option(..., "--strategy", StrategyName), corpus: str = CORPUS, train: str = TRAIN,
              val: Optional[str] = typer.Option(None, "--val", help="validation QA JSONL (default: 20% of --train, split by gold title)"),
              retriever: str = RETRIEVER, generator: str = GENERATOR,
              out: Path = typer.Option(..., "--out"), overwrite: bool = OVERWRITE,
              lrs_generator: str = typer.Option("1e-4,3e-4,1e-3", "--lrs-generator"),
              lrs_retriever: str = typer.Option("1e-5,3e-5,1e-4", "--lrs-retriever"),
              mode: str = choice_option("auto", "--mode", Literal["auto", "phase-wise", "grid", "full-retrain"],
                                        "auto: phase-wise for strategies whose phases train one side, the 2-D grid for joint"),
              steps: Optional[int] = field_option(TrainConfig, "steps"), epochs: float = field_option(TrainConfig, "epochs"),
              top_k: int = TOP_K, lora: bool = LORA, seed: int = field_option(TrainConfig, "seed"),
              batch_size: int = field_option(TrainConfig, "batch_size"), limit: Optional[int] = LIMIT,
              val_limit: Optional[int] = typer.Option(50, "--val-limit"), device: str = DEVICE):
    """Search learning rates phase by phase (2-D grid for joint); the best models are the
    final training: writes DIR/lr_search.json, DIR/retriever, DIR/generator, DIR/cost.json."""
    from fedrag._io import atomic_write_json, check_out, output_dir
    from fedrag.pipeline import build_training_rag, resolve_device
    from fedrag.strategies import make_strategy, save_outputs, total_cost
    from fedrag.strategies.lr_search import search_lr as run_search

    plan = make_strategy(strategy, top_k=top_k)
    cfg = TrainConfig(steps=steps, epochs=epochs, seed=seed, batch_size=batch_size, explicit=given(ctx, TrainConfig))
    grid_g, grid_r = floats(lrs_generator), floats(lrs_retriever)
    check_out(out, "search-lr", overwrite)
    passages, train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    if val_ex is None:
        train_ex, val_ex = carve_validation(train_ex, passages, seed, val_limit)
    rag = build_training_rag(corpus, retriever, generator, lora, top_k, resolve_device(device), seed,
                             shared_retriever=plan.shared_retriever)

    def show(point):
        lr = {k: point[k] for k in ("lr_generator", "lr_retriever")}
        scores = {k: round(v, 3) for k, v in point.items() if k in ("em", "f1", "recall@5", "answer_recall@5")}
        typer.echo(f"search-lr: phase {point['phase']} ({point['stage']}) {lr} -> {scores} [{point['wall_s']:.0f}s]", err=True)

    with output_dir(out, "search-lr", overwrite, {"strategy": plan.name}) as tmp:
        report = run_search(plan, rag, train_ex, val_ex, cfg, grid_g, grid_r, mode=mode, top_k=top_k, on_point=show)
        results = report.pop("final_results")
        save_outputs(rag, tmp, results, plan.name, {"lr_search": {k: report[k] for k in ("best", "search_cost")}},
                     decoding=plan.decoding)
        atomic_write_json(tmp / "lr_search.json", report)
    typer.echo(json.dumps({"best": report["best"], "mode": report["mode"], "points": len(report["points"]),
                           "search_wall_s": round(report["search_cost"]["wall_s"], 1),
                           "final_wall_s": round(total_cost(results, plan.name)["total"]["wall_s"], 1)}))


def carve_validation(train_ex, passages, seed: int = 0, limit: int | None = None, fraction: float = 0.2):
    """Split ``train_ex`` into train/validation by the title of the gold passage (by
    example when there are no gold ids); raises if either side would be empty."""
    import random

    from fedrag.data.converters import split_by_title

    if all(e.gold_ids for e in train_ex):
        fit, val = split_by_title(list(train_ex), passages, fraction, seed)
    else:
        shuffled = list(train_ex)
        random.Random(seed).shuffle(shuffled)
        cut = max(1, round(len(shuffled) * fraction))
        fit, val = shuffled[cut:], shuffled[:cut]
    if not fit or not val:
        raise FedragError(f"cannot carve a validation split from {len(train_ex)} training questions; pass --val")
    return fit, val[:limit] if limit else val
