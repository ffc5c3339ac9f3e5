"""``fedrag compare`` and ``fedrag advise``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fedrag.cli.options import DEVICE, GENERATOR, RETRIEVER, app, field_option
from fedrag.cli.train_cmds import CORPUS, TOP_K, TRAIN, carve_validation, floats, given, load_inputs
from fedrag.errors import FedragError
from fedrag.train import TrainConfig
from fedrag.train.tracking import parse_report_to


@app.command()
def compare(ctx: typer.Context, corpus: str = CORPUS, train: str = TRAIN, test: str = typer.Option(..., "--test", help="test QA JSONL"),
            val: Optional[str] = typer.Option(None, "--val", help="validation QA JSONL for --search (default: 20% of --train)"),
            strategies: str = typer.Option("independent,two-phase,joint-sequence,joint-token,ra-dit", "--strategies"),
            retriever: str = RETRIEVER, generator: str = GENERATOR, out: Path = typer.Option(..., "--out"),
            overwrite: bool = typer.Option(False, "--overwrite", help="start over in an existing --out"),
            search: bool = typer.Option(False, "--search/--no-search", help="phase-aware learning-rate search per strategy"),
            lrs_generator: str = typer.Option("1e-4,3e-4,1e-3", "--lrs-generator"),
            lrs_retriever: str = typer.Option("1e-5,3e-5,1e-4", "--lrs-retriever"),
            steps: Optional[int] = field_option(TrainConfig, "steps"), epochs: float = field_option(TrainConfig, "epochs"),
            lr_generator: float = field_option(TrainConfig, "lr_generator"),
            lr_retriever: float = field_option(TrainConfig, "lr_retriever"),
            batch_size: int = field_option(TrainConfig, "batch_size"), seed: int = field_option(TrainConfig, "seed"),
            report_to: str = field_option(TrainConfig, "report_to"),
            top_k: int = TOP_K,
            limit: Optional[int] = typer.Option(None, "--limit", min=1, help="train on N questions spread evenly through --train"),
            test_limit: Optional[int] = typer.Option(None, "--test-limit", min=1, help="test on N questions spread evenly "
                                                     "through --test (a file sorted by article keeps every article)"),
            val_limit: Optional[int] = typer.Option(50, "--val-limit", min=1),
            max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1), device: str = DEVICE):
    """Train every applicable strategy on your data and compare quality against cost:
    writes DIR/compare.json, DIR/compare.md (table + advice) and DIR/compare.png. Resumable."""
    import shutil
    from dataclasses import asdict

    from fedrag._io import atomic_write_text, check_out, out_lock, output_kind
    from fedrag.data import load_qa
    from fedrag.data.partition import evenly_spaced
    from fedrag.pipeline import build_training_rag, resolve_device
    from fedrag.strategies.compare import CompareSettings, compare as run_compare
    from fedrag.strategies.report import advise, markdown_table, plot_quality_vs_cost

    UNTRACKED = ("progress", "report_to", "run_name", "tracking_dir")  # not part of what a resume must match
    cfg = TrainConfig(steps=steps, epochs=epochs, lr_generator=lr_generator, lr_retriever=lr_retriever,
                      batch_size=batch_size, seed=seed, progress=sys.stderr.isatty(), explicit=given(ctx, TrainConfig))
    parse_report_to(report_to)  # validated before anything runs; not part of the settings a resume matches
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    settings = CompareSettings(strategies=names, retriever=retriever, generator=generator, top_k=top_k,
                               train={k: v for k, v in asdict(cfg).items() if k not in UNTRACKED}, search=search,
                               lrs_generator=floats(lrs_generator), lrs_retriever=floats(lrs_retriever),
                               max_new_tokens=max_new_tokens,
                               data={"corpus": str(corpus), "train": str(train), "test": str(test), "val": val,
                                     "limit": limit, "test_limit": test_limit, "val_limit": val_limit,
                                     "sampling": "evenly-spaced"})
    if out.exists() and output_kind(out) != "compare" and not overwrite:
        check_out(out, "compare", overwrite)  # a directory that is not a comparison is never written into
    passages, train_ex, val_ex = load_inputs(corpus, train, val, None, val_limit)
    train_ex, test_ex = evenly_spaced(train_ex, limit), evenly_spaced(load_qa(test), test_limit)
    if search and val_ex is None:
        train_ex, val_ex = carve_validation(train_ex, passages, seed, val_limit)
    dev = resolve_device(device)

    def build(shared_retriever: bool = False):
        return build_training_rag(corpus, retriever, generator, True, top_k, dev, seed, shared_retriever=shared_retriever)

    with out_lock(out):
        if overwrite and out.exists():
            shutil.rmtree(out)
        result = run_compare(settings, passages, train_ex, test_ex, val_ex, out, build,
                             log=lambda m: typer.echo(m, err=True), report_to=report_to)
    has_gold = all(e.gold_ids for e in train_ex)
    advice = advise(has_gold, lrs_known=not search, result=result)
    md = "# fedrag compare\n\n" + markdown_table(result) + "\n## Advice\n\n" + "\n".join(f"- {a}" if not a.startswith("  ") else f"  - {a.strip()}" for a in advice) + "\n"
    try:
        plot = plot_quality_vs_cost(result, out / "compare.png")
        md += f"\n![quality vs cost]({plot.name})\n"
    except FedragError as exc:  # matplotlib is an optional extra
        typer.echo(f"compare: no plot ({exc})", err=True)
    atomic_write_text(out / "compare.md", md)
    typer.echo(md)


@app.command()
def advise(labels: bool = typer.Option(..., "--labels/--no-labels", help="does your training data have gold passage ids?"),
           lrs_known: bool = typer.Option(False, "--lrs-known/--lrs-unknown", help="do you already know good learning rates?"),
           compare_json: Optional[Path] = typer.Option(None, "--compare", help="a compare.json to check the rule against")):
    """Which fine-tuning strategy is worth its cost for your situation (Lawton et al. 2025)."""
    from fedrag.strategies.report import advise as rule

    result = read_compare_json(compare_json) if compare_json else None
    for line in rule(labels, lrs_known, result):
        typer.echo(line)


def read_compare_json(path: Path) -> dict:
    """A compare.json, checked: a dict whose ``rows`` each name a strategy and its cost."""
    if not path.is_file():
        raise FedragError(f"{path}: file not found")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FedragError(f"{path}: not a compare.json (invalid JSON: {exc})") from None
    rows = result.get("rows") if isinstance(result, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise FedragError(f"{path}: not a compare.json (expected an object with a list of 'rows')")
    for i, r in enumerate(rows):
        missing = [k for k in ("strategy", "train_flops") if k not in r]
        if missing or not isinstance(r.get("train_flops"), (int, float)):
            raise FedragError(f"{path}: row {i + 1} lacks a numeric '{(missing or ['train_flops'])[0]}' (written by fedrag compare?)")
    return result
