"""`fedrag train` and `fedrag search-lr`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fedrag.cli.options import DEVICE, app, choice_option, collect, settings, with_settings
from fedrag.strategies.choices import StrategyName
from fedrag.strategies.settings import PlanSettings, SearchSettings
from fedrag.train import TrainConfig, distributed
from fedrag.train.choices import StageName
from fedrag.train.config import UNTRACKED, VAL_LIMIT
from fedrag.train.validate import carve_validation

# or a user's own by import path (`module:attribute`), as Flower names its apps
STRATEGY = choice_option(None, "--strategy", StrategyName, "a named strategy (or --stage)", "Plan", import_paths=True)
STAGE = choice_option(None, "--stage", StageName, "a single stage (or --strategy)", panel="Plan")
CORPUS = typer.Option(..., "--corpus", help="corpus JSONL")
TRAIN = typer.Option(..., "--train", help="training QA JSONL")
VAL = typer.Option(None, "--val", help="validation QA JSONL")
LIMIT = typer.Option(None, "--train-limit", min=1, help="train on N questions spread evenly through --train")
OUT = typer.Option(..., "--out", help="output directory (written whole, or not at all)")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing --out directory whole")
PLAN = settings(PlanSettings, panel="Models and plan")


def load_inputs(corpus: str, train: str, val: str | None, limit: int | None, val_limit: int | None = None):
    """The corpus and QA files, gold ids checked; `limit`/`val_limit` questions spread
    evenly through their file (an article-sorted file keeps every article)."""
    from fedrag.data import check_gold_ids, load_corpus, load_qa
    from fedrag.data.partition import evenly_spaced

    passages = load_corpus(corpus)
    train_ex = evenly_spaced(load_qa(train), limit)
    val_ex = evenly_spaced(load_qa(val), val_limit) if val else None
    check_gold_ids(train_ex, passages, train)
    if val_ex:
        check_gold_ids(val_ex, passages, val)
    return passages, train_ex, val_ex


def needs_generator(plan) -> bool:
    return "generator" in plan.trains or any(p.stage.name != "contrastive" for p in plan.phases)


def training_rag(corpus: str, models: PlanSettings, plan, device: str, cfg: TrainConfig, generator: bool = True):
    """The RAG system a central run of `plan` trains, as the `models` settings describe it
    (`generator=False`: none, for a plan that never calls it)."""
    from fedrag.pipeline import build_training_rag
    from fedrag.retrieve.retriever import lora_default
    from fedrag.retrieve.search import resolve_refresh

    return build_training_rag(
        corpus,
        models.retriever,
        models.generator if generator else "none",
        models.lora,
        models.top_k,
        device,
        cfg.seed,
        shared_retriever=plan.shared_retriever,
        quantize=models.quantize,
        retriever_lora=lora_default(models.retriever_lora, federated=False),
        dtype=cfg.dtype,
        index_refresh=resolve_refresh(models.index_refresh, federated=False),
    )


def given(ctx: typer.Context, cls) -> tuple[str, ...]:
    """The fields of `cls` whose options were given on the command line: a stage's own
    defaults never replace them (`TrainConfig.explicit`)."""
    from dataclasses import fields

    from click.core import ParameterSource

    return tuple(
        f.name
        for f in fields(cls)
        if f.name not in UNTRACKED and ctx.get_parameter_source(f.name) not in (None, ParameterSource.DEFAULT)
    )


@app.command()
@with_settings(PLAN, settings(TrainConfig, panel="Training"))
def train(
    ctx: typer.Context,
    strategy: Optional[str] = STRATEGY,
    stage: Optional[str] = STAGE,
    corpus: str = CORPUS,
    train: str = TRAIN,
    val: Optional[str] = VAL,
    out: Path = OUT,
    overwrite: bool = OVERWRITE,
    limit: Optional[int] = LIMIT,
    val_limit: Optional[int] = typer.Option(
        None, "--val-limit", min=1, help="validate on N questions of --val", show_default="all"
    ),
    device: str = DEVICE,
    **kw,
):
    """Fine-tune with a strategy (or one stage); writes DIR/retriever, DIR/generator, DIR/cost.json, DIR/metrics.jsonl."""
    from fedrag._io import check_out, resumable_dir
    from fedrag.pipeline import resolve_device
    from fedrag.strategies import total_cost
    from fedrag.train.validate import validation_fn

    models = collect(PlanSettings, kw)
    plan = models.plan(strategy, stage)
    cfg = collect(
        TrainConfig, kw, explicit=given(ctx, TrainConfig), run_name=kw["run_name"] or out.name, progress=sys.stderr.isatty()
    )
    check_out(out, "train", overwrite)  # before anything loads
    passages, train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    if cfg.keep_best and val_ex is None:  # the best weights need questions they were not trained on
        train_ex, val_ex = carve_validation(train_ex, passages, cfg.seed, val_limit)
    identity = _identity(strategy, stage, models, plan, cfg, corpus, train, val, limit, val_limit)
    # the models load before the run's work directory exists: a bad model name leaves nothing to resume
    # under torchrun: this process's device, and the process group left when the run ends
    with distributed.process_group(resolve_device(device)) as device:
        rag = training_rag(corpus, models, plan, device, cfg, generator=needs_generator(plan))
        evaluate_fn = validation_fn("generator" in plan.trains, models.top_k) if val_ex else None
        if not distributed.is_writer():  # a torchrun process besides rank 0: trains its share, writes nothing
            tmp, resumed = distributed.broadcast(None)
            plan.run(rag, train_ex, cfg, val=val_ex, out_dir=Path(tmp), evaluate_fn=evaluate_fn, resume=resumed)
            return
        with resumable_dir(
            out, "train", identity, overwrite, {"strategy": plan.name}, log=lambda m: typer.echo(f"fedrag: {m}", err=True)
        ) as (tmp, resumed):
            distributed.broadcast((str(tmp), resumed))
            results = plan.run(
                rag,
                train_ex,
                cfg,
                val=val_ex,
                out_dir=tmp,
                evaluate_fn=evaluate_fn,
                resume=resumed,
                log=lambda m: typer.echo(f"fedrag: {m}", err=True),
            )
            _save_trained(rag, tmp, results, plan, cfg)
        summary = total_cost(results, plan.name)["total"]
        line = {"strategy": plan.name, "out": str(out), "steps": summary["steps"], "wall_s": round(summary["wall_s"], 1)}
        typer.echo(json.dumps({**line, "flops": summary["flops"], "final_loss": [round(r.final_loss, 4) for r in results]}))


def _identity(strategy, stage, models: PlanSettings, plan, cfg: TrainConfig, corpus, train, val, limit, val_limit) -> dict:
    """What an interrupted `train` run must match to be continued: the settings and the data's content."""
    from dataclasses import asdict

    from fedrag._io import file_digest
    from fedrag.retrieve.retriever import lora_default

    lora = lora_default(models.retriever_lora, False)
    return {
        "plan": {"strategy": strategy, "stage": stage, **asdict(models), "shared_retriever": plan.shared_retriever},
        "train": [p.config(cfg, retriever_lora=lora).tracked() for p in plan.phases],  # what each phase trains with
        "data": {
            "corpus": file_digest(corpus),
            "train": file_digest(train),
            "val": file_digest(val) if val else None,
            "limit": limit,
            "val_limit": val_limit,
        },
    }


def _save_trained(rag, tmp: Path, results, plan, cfg: TrainConfig) -> None:
    """A finished `train` run's outputs in its work directory `tmp`, its resume state dropped."""
    from dataclasses import asdict

    from fedrag.strategies import save_outputs
    from fedrag.strategies.base import drop_resume_state

    phases = [asdict(p.config(cfg, retriever_lora=rag.retriever.is_lora)) for p in plan.phases]
    extra = {"config": {**asdict(cfg), "phases": phases}, "world_size": distributed.world_size()}
    if plan.shared_retriever:  # the passage encoder trained: the re-encoded store goes with it
        if rag.store.fingerprint != rag.retriever.passage_fingerprint():  # left stale by --index-refresh rerank
            rag.reencode_store()
        extra["reencode"] = {"reencoded_passages": len(rag.store)}
        rag.store.save(tmp / "index")
    save_outputs(rag, tmp, results, plan.name, extra, decoding=plan.decoding, plan=plan)
    drop_resume_state(tmp)


@app.command("search-lr")
@with_settings(
    settings(SearchSettings, panel="Search"),
    PLAN,
    settings(TrainConfig, exclude=("lr_generator", "lr_retriever"), panel="Training"),
)
def search_lr(
    ctx: typer.Context,
    strategy: str = choice_option(..., "--strategy", StrategyName, "the strategy to tune", import_paths=True),
    corpus: str = CORPUS,
    train: str = TRAIN,
    val: Optional[str] = typer.Option(None, "--val", help="validation QA JSONL (default: 20% of --train, split by gold title)"),
    out: Path = OUT,
    overwrite: bool = OVERWRITE,
    limit: Optional[int] = LIMIT,
    val_limit: Optional[int] = typer.Option(VAL_LIMIT, "--val-limit", min=1, help="validate on N questions"),
    device: str = DEVICE,
    **kw,
):
    """Search learning rates phase by phase (2-D grid for joint); the best models are the
    final training: writes DIR/lr_search.json, DIR/retriever, DIR/generator, DIR/cost.json."""
    from fedrag._io import atomic_write_json, check_out, output_dir
    from fedrag.pipeline import resolve_device
    from fedrag.strategies import save_outputs, total_cost
    from fedrag.strategies.lr_search import search_lr as run_search

    models, search = collect(PlanSettings, kw), collect(SearchSettings, kw)
    plan = models.plan(strategy, None)
    cfg = collect(TrainConfig, kw, explicit=given(ctx, TrainConfig), run_name=kw["run_name"] or out.name)
    check_out(out, "search-lr", overwrite)
    passages, train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    if val_ex is None:
        train_ex, val_ex = carve_validation(train_ex, passages, cfg.seed, val_limit)
    rag = training_rag(corpus, models, plan, resolve_device(device), cfg)

    def show(point):
        lr = {k: point[k] for k in point["searched"]}
        scores = {k: round(v, 3) for k, v in point.items() if k in ("em", "f1", "recall@5", "answer_recall@5")}
        typer.echo(f"search-lr: phase {point['phase']} ({point['stage']}) {lr} -> {scores} [{point['wall_s']:.0f}s]", err=True)

    with output_dir(out, "search-lr", overwrite, {"strategy": plan.name}) as tmp:
        report = run_search(
            plan,
            rag,
            train_ex,
            val_ex,
            cfg,
            list(search.lrs_generator),
            list(search.lrs_retriever),
            mode=search.mode,
            top_k=models.top_k,
            on_point=show,
        )
        results = report.pop("final_results")
        save_outputs(
            rag,
            tmp,
            results,
            plan.name,
            {"lr_search": {k: report[k] for k in ("best", "search_cost")}},
            decoding=plan.decoding,
            plan=plan,
        )
        atomic_write_json(tmp / "lr_search.json", report)
    typer.echo(
        json.dumps(
            {
                "best": report["best"],
                "mode": report["mode"],
                "points": len(report["points"]),
                "search_wall_s": round(report["search_cost"]["wall_s"], 1),
                "final_wall_s": round(total_cost(results, plan.name)["total"]["wall_s"], 1),
            }
        )
    )
