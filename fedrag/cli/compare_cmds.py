"""`fedrag compare` and `fedrag advise`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fedrag.cli.options import DEVICE, app, collect, settings, with_settings
from fedrag.cli.train_cmds import CORPUS, LIMIT, OUT, TRAIN, given, load_inputs
from fedrag.train.config import UNTRACKED, VAL_LIMIT
from fedrag.train.validate import carve_validation
from fedrag.errors import FedragError
from fedrag.strategies.compare import CompareSettings
from fedrag.strategies.compare_store import CompareInputs
from fedrag.train import TrainConfig


@app.command()
@with_settings(
    settings(CompareSettings, panel="Comparison"), settings(TrainConfig, exclude=("run_name", "tracking_dir"), panel="Training")
)
def compare(
    ctx: typer.Context,
    corpus: str = CORPUS,
    train: str = TRAIN,
    test: str = typer.Option(..., "--test", help="test QA JSONL"),
    val: Optional[str] = typer.Option(None, "--val", help="validation QA JSONL for --search (default: 20% of --train)"),
    out: Path = OUT,
    overwrite: bool = typer.Option(False, "--overwrite", help="start over in an existing --out"),
    limit: Optional[int] = LIMIT,
    test_limit: Optional[int] = typer.Option(
        None,
        "--test-limit",
        min=1,
        help="test on N questions spread evenly through --test (a file sorted by article keeps every article)",
    ),
    val_limit: Optional[int] = typer.Option(VAL_LIMIT, "--val-limit", min=1, help="validate on N questions (--search)"),
    device: str = DEVICE,
    **kw,
):
    """Train every applicable strategy on your data and compare quality against cost:
    writes DIR/compare.json, DIR/compare.md (table + advice) and DIR/compare.png. Resumable."""
    import shutil

    from fedrag._io import check_out, out_lock, output_kind
    from fedrag.data import load_qa
    from fedrag.data.partition import evenly_spaced
    from fedrag.pipeline import build_training_rag, resolve_device
    from fedrag.strategies.compare import compare as run_compare

    cfg = collect(TrainConfig, kw, progress=sys.stderr.isatty(), explicit=given(ctx, TrainConfig))
    report_to = cfg.report_to
    settings = _settings(kw, cfg, CompareInputs(str(corpus), str(train), str(test), val, limit, test_limit, val_limit))
    search, seed, top_k = settings.search, cfg.seed, settings.top_k
    if out.exists() and output_kind(out) != "compare" and not overwrite:
        check_out(out, "compare", overwrite)  # a directory that is not a comparison is never written into
    passages, train_ex, val_ex = load_inputs(corpus, train, val, limit, val_limit)
    test_ex = evenly_spaced(load_qa(test), test_limit)
    if search and val_ex is None:
        train_ex, val_ex = carve_validation(train_ex, passages, seed, val_limit)
    dev = resolve_device(device)

    def build(shared_retriever: bool = False):
        return build_training_rag(
            corpus,
            settings.retriever,
            settings.generator,
            True,
            top_k,
            dev,
            seed,
            shared_retriever=shared_retriever,
            dtype=cfg.dtype,
        )

    with out_lock(out):
        if overwrite and out.exists():
            shutil.rmtree(out)
        result = run_compare(
            settings, passages, train_ex, test_ex, val_ex, out, build, log=lambda m: typer.echo(m, err=True), report_to=report_to
        )
    md = _write_report(result, out, has_gold=all(e.gold_ids for e in train_ex), lrs_known=not search)
    typer.echo(md)


def _settings(kw: dict, cfg: TrainConfig, data: CompareInputs) -> CompareSettings:
    """The comparison's settings: the command line's, the training configuration, and which data it runs on."""
    from dataclasses import asdict

    return collect(
        CompareSettings,
        kw,
        # `explicit` travels with the values: a stage's defaults replace only what the user did not set
        train={k: v for k, v in asdict(cfg).items() if k == "explicit" or k not in UNTRACKED},
        data=asdict(data),
    )


def _write_report(result: dict, out: Path, has_gold: bool, lrs_known: bool) -> str:
    """DIR/compare.md (the table, the advice and the plot when matplotlib is installed); its text."""
    from fedrag._io import atomic_write_text
    from fedrag.strategies.report import advise, markdown_table, plot_quality_vs_cost

    advice = advise(has_gold, lrs_known=lrs_known, result=result)
    md = (
        "# fedrag compare\n\n"
        + markdown_table(result)
        + "\n## Advice\n\n"
        + "\n".join(f"- {a}" if not a.startswith("  ") else f"  - {a.strip()}" for a in advice)
        + "\n"
    )
    try:
        plot = plot_quality_vs_cost(result, out / "compare.png")
        md += f"\n![quality vs cost]({plot.name})\n"
    except FedragError as exc:  # matplotlib is an optional extra
        typer.echo(f"compare: no plot ({exc})", err=True)
    atomic_write_text(out / "compare.md", md)
    return md


@app.command()
def advise(
    labels: bool = typer.Option(..., "--labels/--no-labels", help="does your training data have gold passage ids?"),
    lrs_known: bool = typer.Option(False, "--lrs-known/--lrs-unknown", help="do you already know good learning rates?"),
    compare_json: Optional[Path] = typer.Option(None, "--compare", help="a compare.json to check the rule against"),
):
    """Which fine-tuning strategy is worth its cost for your situation (Lawton et al. 2025)."""
    from fedrag.strategies.report import advise as rule

    result = read_compare_json(compare_json) if compare_json else None
    for line in rule(labels, lrs_known, result):
        typer.echo(line)


def read_compare_json(path: Path) -> dict:
    """A compare.json, checked: a dict whose `rows` each name a strategy and its cost."""
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
            raise FedragError(
                f"{path}: row {i + 1} lacks a numeric '{(missing or ['train_flops'])[0]}' (written by fedrag compare?)"
            )
    return result
