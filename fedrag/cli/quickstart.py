"""``fedrag quickstart``: the whole story on the embedded defaults (bundled models + demo data).

demo data → baseline eval → fine-tune → eval → 2-site federated simulation → eval,
ending with a before/after table.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fedrag.cli.options import app, choice_option
from fedrag.strategies.library import StrategyName


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
def quickstart(out: Path = typer.Option(Path("runs/quickstart"), "--out", help="the run folder"),
               strategy: str = choice_option("independent", "--strategy", StrategyName, "the strategy to fine-tune with"),
               steps: int = typer.Option(30, "--steps", min=1, help="centralized optimizer steps per phase"),
               rounds: int = typer.Option(2, "--rounds", min=1, help="federated rounds per phase (2 sites)"),
               test_limit: int = typer.Option(40, "--test-limit", min=1, help="test questions"),
               top_k: int = typer.Option(3, "--top-k", min=1, help="passages retrieved per question"),
               lr_generator: float = typer.Option(1e-3, "--lr-generator", help="the demo's generator learning rate "
                                                  "(higher than train's default: a short run on easy data)"),
               lr_retriever: float = typer.Option(5e-5, "--lr-retriever", help="the demo's retriever learning rate"),
               skip_federated: bool = typer.Option(False, "--skip-federated", help="only the baseline and centralized rows"),
               overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory whole")):
    """Baseline → fine-tune → federated, on the demo data with MiniLM + SmolLM2; prints the table."""
    from fedrag._io import output_dir

    with output_dir(out, "quickstart", overwrite) as tmp:
        _quickstart(tmp, strategy, steps, rounds, test_limit, top_k, lr_generator, lr_retriever, skip_federated)
    typer.echo(f"outputs -> {out}")


def _quickstart(out: Path, strategy: str, steps: int, rounds: int, test_limit: int, top_k: int, lr_generator: float,
                lr_retriever: float, skip_federated: bool) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    from fedrag._io import atomic_write_json
    from fedrag.data import demo, load_qa
    from fedrag.pipeline import build_training_rag
    from fedrag.strategies import make_strategy, save_outputs
    from fedrag.train import TrainConfig

    console = Console(stderr=False)
    data = out / "data"
    counts = demo.write(data)
    console.print(f"[bold]1/4[/] demo data: {counts} → {data}")
    rows = []  # (system, metrics, train s, eval s, bytes)
    t = time.perf_counter()
    base = _eval(data, "minilm", "smollm2-135m", test_limit, top_k)
    rows.append(("untuned", base, 0.0, time.perf_counter() - t, 0))
    console.print(f"[bold]2/4[/] baseline: EM {rows[-1][1]['em']:.3f}  F1 {rows[-1][1]['f1']:.3f}")
    cfg = TrainConfig(steps=steps, batch_size=4, lr_generator=lr_generator, lr_retriever=lr_retriever,
                      progress=sys.stderr.isatty())
    plan = make_strategy(strategy, top_k=top_k)
    rag = build_training_rag(str(data / "corpus.jsonl"), "minilm", "smollm2-135m", top_k=top_k,
                             shared_retriever=plan.shared_retriever)
    t = time.perf_counter()
    results = plan.run(rag, load_qa(data / "train.jsonl"), cfg, out_dir=out / "central")
    wall = time.perf_counter() - t
    save_outputs(rag, out / "central", results, plan.name, decoding=plan.decoding)
    t = time.perf_counter()
    m = _eval(data, str(out / "central" / "retriever"), str(out / "central" / "generator"), test_limit, top_k)
    rows.append((f"{strategy} (centralized, {steps} steps/phase)", m, wall, time.perf_counter() - t, 0))
    console.print(f"[bold]3/4[/] {strategy}: EM {rows[-1][1]['em']:.3f}  F1 {rows[-1][1]['f1']:.3f}  ({wall:.0f}s)")
    if not skip_federated:
        from fedrag.data import load_corpus
        from fedrag.data.partition import partition, write_sites
        from fedrag.federation.simulation import simulate
        from fedrag.federation.task import FedTask

        sites = write_sites(partition(load_corpus(data / "corpus.jsonl"), load_qa(data / "train.jsonl"), 2, "iid"), out / "sites")
        local = max(1, steps // (2 * rounds))
        task = FedTask(strategy=strategy, rounds=rounds, local_steps=local, batch_size=4, top_k=top_k,
                       lr_generator=lr_generator, lr_retriever=lr_retriever, out=str((out / "federated").resolve()))
        t = time.perf_counter()
        cost = simulate(task, sites)
        wall = time.perf_counter() - t
        t = time.perf_counter()
        m = _eval(data, str(out / "federated" / "retriever"), str(out / "federated" / "generator"), test_limit, top_k)
        rows.append((f"{strategy} (2 sites × {rounds} rounds × {local} local steps/phase, federated)", m, wall,
                     time.perf_counter() - t, cost["bytes_sent"] + cost["bytes_received"]))
        console.print(f"[bold]4/4[/] federated: EM {rows[-1][1]['em']:.3f}  F1 {rows[-1][1]['f1']:.3f}  ({wall:.0f}s)")
    table = Table(title=f"fedrag quickstart: demo data, {test_limit} test questions, MiniLM + SmolLM2-135M")
    for col in ("system", "EM", "F1", "Recall@1", "Recall@5", "train s", "eval s", "MB on the wire"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, m, train_s, eval_s, nbytes in rows:
        table.add_row(name, f"{m['em']:.3f}", f"{m['f1']:.3f}", f"{m['recall@1']:.3f}", f"{m['recall@5']:.3f}",
                      f"{train_s:.0f}" if train_s else "-", f"{eval_s:.0f}", f"{nbytes / 1e6:.1f}" if nbytes else "-")
    console.print(table)
    atomic_write_json(out / "summary.json", [{"system": n, **m, "train_s": ts, "eval_s": es, "bytes": b}
                                             for n, m, ts, es, b in rows])
