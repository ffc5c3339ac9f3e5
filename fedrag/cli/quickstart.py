"""`fedrag quickstart`: the whole story on the embedded defaults (bundled models + demo data).

demo data → baseline eval → fine-tune → eval → 2-site federated simulation → eval,
ending with a before/after table.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from fedrag.cli.fed_cmds import CPUS_PER_SITE
from fedrag.cli.options import app, choice_option, settings, with_settings
from fedrag.strategies.choices import StrategyName
from fedrag.strategies.settings import PlanSettings

BUNDLED = (PlanSettings.retriever, PlanSettings.generator)  # the bundled pair the demo is measured on


def _eval(data: Path, retriever: str, generator: str, limit: int, top_k: int) -> dict:
    import sys

    from fedrag.data import load_qa
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import build_rag

    rag = build_rag(str(data / "corpus.jsonl"), retriever, generator, top_k=top_k)
    m = evaluate(rag, load_qa(data / "test.jsonl", limit=limit), progress=sys.stderr.isatty())
    m.pop("_rows")
    return m


@app.command()
@with_settings(settings(PlanSettings, only=("retriever", "generator"), panel="Models"))
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="the run folder"),
    strategy: str = choice_option("independent", "--strategy", StrategyName, "the strategy to fine-tune with"),
    steps: int = typer.Option(16, "--steps", min=1, help="centralized optimizer steps per phase"),
    rounds: int = typer.Option(2, "--rounds", min=1, help="federated rounds per phase (2 sites)"),
    test_limit: int = typer.Option(30, "--test-limit", min=1, help="test questions"),
    top_k: int = typer.Option(2, "--top-k", min=1, help="passages retrieved per question"),
    lr_generator: float = typer.Option(
        1e-3, "--lr-generator", help="the demo's generator learning rate (higher than train's default: a short run on easy data)"
    ),
    lr_retriever: float = typer.Option(5e-5, "--lr-retriever", help="the demo's retriever learning rate"),
    skip_federated: bool = typer.Option(False, "--skip-federated", help="only the baseline and centralized rows"),
    cpus_per_site: float = CPUS_PER_SITE,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory whole"),
    **models: str,
):
    """Baseline → fine-tune → federated, on the demo data with MiniLM + SmolLM2 (or --retriever/--generator); prints the table."""
    from fedrag._io import output_dir

    with output_dir(out, "quickstart", overwrite) as tmp:
        pair = (models["retriever"], models["generator"])
        lrs = (lr_generator, lr_retriever)
        _quickstart(tmp, pair, strategy, steps, rounds, test_limit, top_k, lrs, skip_federated, cpus_per_site)
    typer.echo(f"outputs -> {out}")


def _quickstart(
    out: Path,
    pair: tuple[str, str],
    strategy: str,
    steps: int,
    rounds: int,
    test_limit: int,
    top_k: int,
    lrs: tuple[float, float],
    skip_federated: bool,
    cpus_per_site: float,
) -> None:
    from rich.console import Console

    from fedrag.data import demo

    console = Console(stderr=False)
    data = out / "data"
    counts = demo.write(data)
    console.print(f"[bold]1/4[/] demo data: {counts} → {data}")
    t = time.perf_counter()
    base = _eval(data, *pair, test_limit, top_k)
    rows = [Row("untuned", f"{models_label(pair)} as they come, no fine-tuning", base, 0.0, time.perf_counter() - t, 0)]
    console.print(f"[bold]2/4[/] baseline: EM {base['em']:.3f}  F1 {base['f1']:.3f}")
    rows.append(_centralized(out, data, pair, strategy, steps, test_limit, top_k, *lrs))
    m = rows[-1].metrics
    console.print(f"[bold]3/4[/] {strategy}: EM {m['em']:.3f}  F1 {m['f1']:.3f}  ({rows[-1].train_s:.0f}s)")
    if not skip_federated:
        rows.append(_federated(out, data, pair, strategy, (steps, rounds), test_limit, top_k, lrs, cpus_per_site))
        m = rows[-1].metrics
        console.print(f"[bold]4/4[/] federated: EM {m['em']:.3f}  F1 {m['f1']:.3f}  ({rows[-1].train_s:.0f}s)")
    for line in summary_lines(rows, test_limit, pair):
        console.print(line, markup=False) if line else console.print()
    _write_summary(out, rows, test_limit, pair)


def _evaluated(data: Path, models: Path, test_limit: int, top_k: int) -> tuple[dict, float]:
    """The metrics of the models saved in `models`, and the seconds their evaluation took."""
    t = time.perf_counter()
    m = _eval(data, str(models / "retriever"), str(models / "generator"), test_limit, top_k)
    return m, time.perf_counter() - t


def _centralized(out: Path, data: Path, pair, strategy, steps, test_limit, top_k, lr_generator, lr_retriever) -> Row:
    """Train `strategy` on the whole demo training set in this process; its row."""
    import sys

    from fedrag.data import load_qa
    from fedrag.pipeline import build_training_rag
    from fedrag.strategies import make_strategy, save_outputs
    from fedrag.train import TrainConfig

    cfg = TrainConfig(
        steps=steps, batch_size=4, lr_generator=lr_generator, lr_retriever=lr_retriever, progress=sys.stderr.isatty()
    )
    plan = make_strategy(strategy, top_k=top_k)
    rag = build_training_rag(str(data / "corpus.jsonl"), *pair, top_k=top_k, shared_retriever=plan.shared_retriever)
    t = time.perf_counter()
    results = plan.run(rag, load_qa(data / "train.jsonl"), cfg, out_dir=out / "central")
    wall = time.perf_counter() - t
    save_outputs(rag, out / "central", results, plan.name, decoding=plan.decoding, plan=plan)
    m, eval_s = _evaluated(data, out / "central", test_limit, top_k)
    return Row("centralized", f"{strategy}, {steps} optimizer steps per phase on this machine", m, wall, eval_s, 0)


def _federated(out: Path, data: Path, pair, strategy, length, test_limit, top_k, lrs, cpus_per_site) -> Row:
    """Train `strategy` on the demo training set split between 2 simulated sites, with as
    many sequential steps of the global model as the centralized row takes; its row."""
    from fedrag.data import load_corpus, load_qa
    from fedrag.data.partition import partition, write_sites
    from fedrag.federation.launch.simulation import simulate
    from fedrag.federation.task import FedTask

    (steps, rounds), (lr_generator, lr_retriever) = length, lrs
    sites = write_sites(partition(load_corpus(data / "corpus.jsonl"), load_qa(data / "train.jsonl"), 2, "iid"), out / "sites")
    local = max(1, steps // (2 * rounds))
    # the table evaluates the final models; per-round site evaluation would only add time here
    task = FedTask(
        strategy=strategy,
        retriever=pair[0],
        generator=pair[1],
        rounds=rounds,
        local_steps=local,
        batch_size=4,
        top_k=top_k,
        evaluate_every=0,
        lr_generator=lr_generator,
        lr_retriever=lr_retriever,
        retriever_lora=False,  # the centralized row's retriever training, so the two rows differ only by federation
        out=str((out / "federated").resolve()),
    )
    t = time.perf_counter()
    cost = simulate(task, sites, cpus_per_site=cpus_per_site)
    wall = time.perf_counter() - t
    m, eval_s = _evaluated(data, out / "federated", test_limit, top_k)
    what = (
        f"{strategy}, 2 sites (Flower simulation) x {rounds} rounds x {local} local steps "
        f"per phase: {rounds * local} sequential steps of the global model"
    )
    return Row("federated", what, m, wall, eval_s, cost["bytes_sent"] + cost["bytes_received"])


def _write_summary(out: Path, rows: list[Row], test_limit: int, pair: tuple[str, str] = BUNDLED) -> None:
    from fedrag._io import atomic_write_json, atomic_write_text

    atomic_write_text(out / "summary.md", summary_markdown(rows, test_limit, pair))
    atomic_write_json(
        out / "summary.json",
        [
            {"system": r.system, "what": r.what, **r.metrics, "train_s": r.train_s, "eval_s": r.eval_s, "bytes": r.nbytes}
            for r in rows
        ],
    )


@dataclass
class Row:
    """One system of the quickstart's table: a short name, what it is, its metrics and costs."""

    system: str
    what: str
    metrics: dict
    train_s: float
    eval_s: float
    nbytes: int


COLUMNS = ("system", "EM", "F1", "R@1", "R@5", "train s", "eval s", "MB on wire")
NEXT = (
    "Next: which strategy is worth its cost on your data? `fedrag compare --corpus C --train T --test Q "
    "--out DIR` (docs/strategies.md)."
)


def _cells(r: Row) -> list[str]:
    m = r.metrics
    return [
        r.system,
        f"{m['em']:.3f}",
        f"{m['f1']:.3f}",
        f"{m['recall@1']:.3f}",
        f"{m['recall@5']:.3f}",
        f"{r.train_s:.0f}" if r.train_s else "-",
        f"{r.eval_s:.0f}",
        f"{r.nbytes / 1e6:.1f}" if r.nbytes else "-",
    ]


def summary_lines(rows: list[Row], test_limit: int, pair: tuple[str, str] = BUNDLED) -> list[str]:
    """The table as plain lines that fit 80 columns, a line per row saying what it is, and the next step."""
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    fmt = lambda c: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths)))  # noqa: E731
    lines = [
        f"fedrag quickstart: demo data, {test_limit} test questions, {models_label(pair)}",
        "",
        fmt(cells[0]),
        "  ".join("-" * w for w in widths),
    ]
    lines += [fmt(c) for c in cells[1:]]
    lines.append("")
    for r in rows:
        lines += textwrap.wrap(f"{r.system}: {r.what}", 80, subsequent_indent="  ")
    return lines + [""] + textwrap.wrap(NEXT, 80, break_on_hyphens=False)


def summary_markdown(rows: list[Row], test_limit: int, pair: tuple[str, str] = BUNDLED) -> str:
    """The same summary as Markdown, written to the run folder."""
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "|".join("---" for _ in COLUMNS) + "|\n"
    body = "".join("| " + " | ".join(_cells(r)) + " |\n" for r in rows)
    what = "".join(f"* **{r.system}**: {r.what}\n" for r in rows)
    return (
        f"# fedrag quickstart\n\nDemo data, {test_limit} test questions, {models_label(pair)}.\n\n{head}{body}\n{what}\n{NEXT}\n"
    )


def models_label(pair: tuple[str, str]) -> str:
    """How the table names the models: the bundled pair by its names, others by their last path part."""
    if tuple(pair) == BUNDLED:
        return "MiniLM + SmolLM2-135M"
    return " + ".join(Path(m).name or m for m in pair)
