"""``fedrag quickstart``: the whole story on the embedded defaults (bundled models + demo data).

demo data → baseline eval → fine-tune → eval → 2-site federated simulation → eval,
ending with a before/after table.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fedrag.cli import app


def _eval(data: Path, retriever: str, generator: str, limit: int, top_k: int) -> dict:
    from fedrag.data import load_qa
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import build_rag

    rag = build_rag(str(data / "corpus.jsonl"), retriever, generator, top_k=top_k)
    m = evaluate(rag, load_qa(data / "test.jsonl", limit=limit), progress=False)
    m.pop("_rows")
    return m


@app.command()
def quickstart(out: Path = typer.Option(Path("runs/quickstart"), "--out"),
               strategy: str = typer.Option("independent", "--strategy"),
               steps: int = typer.Option(30, "--steps", help="centralized optimizer steps per phase"),
               rounds: int = typer.Option(2, "--rounds"), test_limit: int = typer.Option(40, "--test-limit"),
               top_k: int = typer.Option(3, "--top-k"), lr_generator: float = typer.Option(1e-3, "--lr-generator"),
               lr_retriever: float = typer.Option(5e-5, "--lr-retriever"), skip_federated: bool = typer.Option(False, "--skip-federated")):
    """Baseline → fine-tune → federated, on the demo data with MiniLM + SmolLM2; prints the table."""
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
    rows = []
    t = time.perf_counter()
    rows.append(("untuned", _eval(data, "minilm", "smollm2-135m", test_limit, top_k), time.perf_counter() - t, 0))
    console.print(f"[bold]2/4[/] baseline: EM {rows[-1][1]['em']:.3f}  F1 {rows[-1][1]['f1']:.3f}")
    cfg = TrainConfig(steps=steps, batch_size=4, lr_generator=lr_generator, lr_retriever=lr_retriever)
    rag = build_training_rag(str(data / "corpus.jsonl"), "minilm", "smollm2-135m", top_k=top_k)
    plan = make_strategy(strategy, top_k=top_k)
    t = time.perf_counter()
    results = plan.run(rag, load_qa(data / "train.jsonl"), cfg, out_dir=out / "central")
    wall = time.perf_counter() - t
    save_outputs(rag, out / "central", results, plan.name)
    rows.append((f"{strategy} (centralized)", _eval(data, str(out / "central" / "retriever"), str(out / "central" / "generator"),
                                                   test_limit, top_k), wall, 0))
    console.print(f"[bold]3/4[/] {strategy}: EM {rows[-1][1]['em']:.3f}  F1 {rows[-1][1]['f1']:.3f}  ({wall:.0f}s)")
    if not skip_federated:
        from fedrag.data import load_corpus
        from fedrag.data.partition import partition, write_sites
        from fedrag.federation.simulation import simulate
        from fedrag.federation.task import FedTask

        sites = write_sites(partition(load_corpus(data / "corpus.jsonl"), load_qa(data / "train.jsonl"), 2, "iid"), out / "sites")
        task = FedTask(strategy=strategy, rounds=rounds, local_steps=max(1, steps // (2 * rounds)), batch_size=4, top_k=top_k,
                       lr_generator=lr_generator, lr_retriever=lr_retriever, out=str((out / "federated").resolve()))
        t = time.perf_counter()
        cost = simulate(task, sites)
        wall = time.perf_counter() - t
        rows.append((f"{strategy} (2 sites, federated)", _eval(data, str(out / "federated" / "retriever"),
                                                               str(out / "federated" / "generator"), test_limit, top_k),
                     wall, cost["bytes_sent"] + cost["bytes_received"]))
        console.print(f"[bold]4/4[/] federated: EM {rows[-1][1]['em']:.3f}  F1 {rows[-1][1]['f1']:.3f}  ({wall:.0f}s)")
    table = Table(title=f"fedrag quickstart: demo data, {test_limit} test questions, MiniLM + SmolLM2-135M")
    for col in ("system", "EM", "F1", "Recall@1", "Recall@5", "wall s", "MB on the wire"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, m, wall, nbytes in rows:
        table.add_row(name, f"{m['em']:.3f}", f"{m['f1']:.3f}", f"{m['recall@1']:.3f}", f"{m['recall@5']:.3f}",
                      f"{wall:.0f}", f"{nbytes / 1e6:.1f}" if nbytes else "-")
    console.print(table)
    atomic_write_json(out / "summary.json", [{"system": n, **m, "wall_s": w, "bytes": b} for n, m, w, b in rows])
    console.print(f"summary → {out / 'summary.json'}")
