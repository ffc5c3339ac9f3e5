"""``fedrag train`` and ``fedrag search-lr``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fedrag.cli import GENERATOR, RETRIEVER, app
from fedrag.errors import FedragError

STRATEGY = typer.Option(None, "--strategy", help="independent | two-phase | joint-sequence | joint-token | ra-dit")
STAGE = typer.Option(None, "--stage", help="contrastive | lsr | ralt | rag-sequence | rag-token")
CORPUS = typer.Option(..., "--corpus")
TRAIN = typer.Option(..., "--train")
VAL = typer.Option(None, "--val")
STEPS = typer.Option(None, "--steps", help="optimizer steps per phase (wins over --epochs)")
EPOCHS = typer.Option(1.0, "--epochs")
LR_G = typer.Option(3e-4, "--lr-generator")
LR_R = typer.Option(2e-5, "--lr-retriever")
TOP_K = typer.Option(3, "--top-k")
LORA = typer.Option(True, "--lora/--full", help="LoRA adapter (default) or full fine-tuning of the generator")
SEED = typer.Option(0, "--seed")
BATCH = typer.Option(4, "--batch-size")
LIMIT = typer.Option(None, "--limit", help="use only the first N training examples")
DEVICE = typer.Option("auto", "--device")


def train_config(**kw):
    from fedrag.train import TrainConfig

    return TrainConfig(**{k: v for k, v in kw.items() if v is not None})


def resolve_plan(strategy: str | None, stage: str | None, top_k: int, ralt_mode: str = "all-in-one",
                 two_phase_loss: str = "rag-sequence", two_phase_order: str = "generator-first"):
    """A Strategy from ``--strategy`` or a one-phase one from ``--stage``."""
    from fedrag.strategies import custom, make_strategy
    from fedrag.train import make_stage

    if (strategy is None) == (stage is None):
        raise FedragError("give exactly one of --strategy or --stage")
    if stage:
        return custom(stage, make_stage(stage, top_k=top_k, mode=ralt_mode))
    opts = {"retriever_loss": two_phase_loss, "order": two_phase_order} if strategy == "two-phase" else {}
    return make_strategy(strategy, top_k=top_k, **opts)


def load_inputs(corpus: str, train: str, val: str | None, limit: int | None, val_limit: int | None = None):
    from fedrag.data import check_gold_ids, load_corpus, load_qa

    passages = load_corpus(corpus)
    train_ex = load_qa(train, limit=limit)
    val_ex = load_qa(val, limit=val_limit) if val else None
    check_gold_ids(train_ex, passages, train)
    if val_ex:
        check_gold_ids(val_ex, passages, val)
    return train_ex, val_ex


def _needs_generator(plan) -> bool:
    return any(p.stage.name != "contrastive" for p in plan.phases)


@app.command()
def train(strategy: Optional[str] = STRATEGY, stage: Optional[str] = STAGE, corpus: str = CORPUS, train: str = TRAIN,
          val: Optional[str] = VAL, retriever: str = RETRIEVER, generator: str = GENERATOR,
          out: Path = typer.Option(..., "--out"), steps: Optional[int] = STEPS, epochs: float = EPOCHS,
          lr_generator: float = LR_G, lr_retriever: float = LR_R, top_k: int = TOP_K, lora: bool = LORA,
          seed: int = SEED, batch_size: int = BATCH, grad_accum: int = typer.Option(1, "--grad-accum"),
          limit: Optional[int] = LIMIT, val_limit: Optional[int] = typer.Option(None, "--val-limit"),
          scheduler: str = typer.Option("linear", "--scheduler"), warmup_ratio: float = typer.Option(0.1, "--warmup-ratio"),
          eval_every: int = typer.Option(0, "--eval-every"), checkpoint_every: int = typer.Option(0, "--checkpoint-every"),
          gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
          ralt_mode: str = typer.Option("all-in-one", "--ralt-mode"),
          two_phase_loss: str = typer.Option("rag-sequence", "--two-phase-loss"),
          two_phase_order: str = typer.Option("generator-first", "--two-phase-order"),
          train_passages: bool = typer.Option(False, "--train-passages", help="contrastive or lsr stage: also train the passage encoder (re-encodes the store)"),
          device: str = DEVICE):
    """Fine-tune with a strategy (or one stage); writes DIR/retriever, DIR/generator, DIR/cost.json, DIR/metrics.jsonl."""
    from fedrag.pipeline import build_training_rag, resolve_device
    from fedrag.strategies import save_outputs, total_cost
    from fedrag.train.validate import validation_fn

    plan = resolve_plan(strategy, stage, top_k, ralt_mode, two_phase_loss, two_phase_order)
    if train_passages:
        if stage not in ("contrastive", "lsr"):
            raise FedragError("--train-passages applies to --stage contrastive or --stage lsr")
        plan.phases[0].stage.train_passages = True
    train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    cfg = train_config(steps=steps, epochs=epochs, lr_generator=lr_generator, lr_retriever=lr_retriever, seed=seed,
                       batch_size=batch_size, grad_accum=grad_accum, scheduler=scheduler, warmup_ratio=warmup_ratio,
                       eval_every=eval_every, checkpoint_every=checkpoint_every,
                       gradient_checkpointing=gradient_checkpointing, progress=sys.stderr.isatty())
    rag = build_training_rag(corpus, retriever, generator if _needs_generator(plan) else "none", lora, top_k,
                             resolve_device(device), seed, shared_retriever=train_passages)
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    evaluate_fn = validation_fn("generator" in plan.trains, top_k) if val_ex else None
    results = plan.run(rag, train_ex, cfg, val=val_ex, out_dir=out, evaluate_fn=evaluate_fn)
    extra = {"config": cfg.__dict__}
    if train_passages:
        from fedrag.train.stages import reencode_store

        extra["reencode"] = reencode_store(rag)
        rag.store.save(out / "index")
    save_outputs(rag, out, results, plan.name, extra)
    summary = total_cost(results, plan.name)["total"]
    typer.echo(json.dumps({"strategy": plan.name, "out": str(out), "steps": summary["steps"],
                           "wall_s": round(summary["wall_s"], 1), "flops": summary["flops"],
                           "final_loss": [round(r.final_loss, 4) for r in results]}))


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise FedragError(f"expected comma-separated numbers, got '{text}'") from None


@app.command("search-lr")
def search_lr(strategy: str = typer.Option(..., "--strategy"), corpus: str = CORPUS, train: str = TRAIN,
              val: str = typer.Option(..., "--val"), retriever: str = RETRIEVER, generator: str = GENERATOR,
              out: Path = typer.Option(..., "--out"), lrs_generator: str = typer.Option("1e-4,3e-4,1e-3", "--lrs-generator"),
              lrs_retriever: str = typer.Option("1e-5,3e-5,1e-4", "--lrs-retriever"), steps: Optional[int] = STEPS,
              epochs: float = EPOCHS, top_k: int = TOP_K, lora: bool = LORA, seed: int = SEED, batch_size: int = BATCH,
              limit: Optional[int] = LIMIT, val_limit: Optional[int] = typer.Option(50, "--val-limit"), device: str = DEVICE):
    """Grid-search learning rates (1-D per model, 2-D for joint); writes DIR/lr_search.json."""
    from fedrag._io import atomic_write_json
    from fedrag.pipeline import build_training_rag, resolve_device
    from fedrag.strategies import total_cost
    from fedrag.train.cost import Cost
    from fedrag.train.lr_search import search
    from fedrag.train.validate import validation_fn

    plan = resolve_plan(strategy, None, top_k)
    train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    cfg = train_config(steps=steps, epochs=epochs, seed=seed, batch_size=batch_size)
    dev = resolve_device(device)
    fn = validation_fn(True, top_k)

    def run_point(point_cfg):
        rag = build_training_rag(corpus, retriever, generator, lora, top_k, dev, seed)
        results = resolve_plan(strategy, None, top_k).run(rag, train_ex, point_cfg)
        t = total_cost(results, plan.name)["total"]
        return fn(rag, val_ex), Cost(**{k: v for k, v in t.items()})

    report = search(run_point, strategy, cfg, _floats(lrs_generator), _floats(lrs_retriever))
    atomic_write_json(out / "lr_search.json", report)
    typer.echo(json.dumps(report["best"]))
