"""The ``fedrag`` command line. User errors end with one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fedrag._env import apply_defaults

apply_defaults()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune Retrieval-Augmented Generation systems, centrally or with Flower.")

RETRIEVER = typer.Option("minilm", "--retriever", help="bundled name (minilm), directory, or Hub id")
GENERATOR = typer.Option("smollm2-135m", "--generator", help="bundled name (smollm2-135m), directory, .gguf, Hub id, or 'none'")


def _write_json(path: str, obj) -> None:
    from fedrag._io import atomic_write_json

    atomic_write_json(path, obj)


@app.command("demo-data")
def demo_data(out: Path = typer.Option(..., "--out", help="directory for corpus/train/test JSONL"),
              seed: int = typer.Option(0, "--seed"), people: int = typer.Option(120, "--people", min=4)):
    """Write the built-in synthetic demo dataset (fictional people) as JSONL."""
    from fedrag.data import demo

    counts = demo.write(out, seed=seed, n_people=people)
    typer.echo(f"wrote {out}/corpus.jsonl ({counts['passages']} passages), train.jsonl ({counts['train']}), test.jsonl ({counts['test']})")


@app.command()
def index(corpus: str = typer.Option(..., "--corpus"), retriever: str = RETRIEVER,
          out: Path = typer.Option(..., "--out"), device: str = typer.Option("auto", "--device")):
    """Encode a corpus and save a FAISS knowledge store (reuses cached embeddings)."""
    import time

    from fedrag.data import load_corpus
    from fedrag.pipeline import resolve_device
    from fedrag.retrieve import KnowledgeStore, Retriever

    passages = load_corpus(corpus)
    ret = Retriever.load(retriever, device=resolve_device(device))
    t0 = time.perf_counter()
    store = KnowledgeStore.build(passages, ret, show_progress=sys.stderr.isatty())
    store.save(out)
    typer.echo(f"indexed {len(store)} passages (dim {store.dim}) in {time.perf_counter() - t0:.1f}s -> {out}")


@app.command("eval")
def eval_cmd(qa: str = typer.Option(..., "--qa"), corpus: Optional[str] = typer.Option(None, "--corpus"),
             retriever: str = RETRIEVER, generator: str = GENERATOR,
             top_k: int = typer.Option(3, "--top-k"), retrieval: str = typer.Option("dense", "--retrieval"),
             limit: Optional[int] = typer.Option(None, "--limit"), index_dir: Optional[str] = typer.Option(None, "--index"),
             output: Optional[str] = typer.Option(None, "--output"), predictions: Optional[str] = typer.Option(None, "--predictions"),
             batch_size: int = typer.Option(8, "--batch-size"), device: str = typer.Option("auto", "--device")):
    """Evaluate retrieval (Recall@k, MRR@10) and answers (EM, F1) on a QA set."""
    from fedrag.data import check_gold_ids, load_qa, write_jsonl
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import build_rag, resolve_device

    examples = load_qa(qa, limit=limit)
    rag = build_rag(corpus, retriever, generator, index_dir, retrieval, top_k, resolve_device(device))
    check_gold_ids(examples, rag.store.passages, qa)
    metrics = evaluate(rag, examples, batch_size=batch_size, progress=sys.stderr.isatty())
    rows = metrics.pop("_rows")
    metrics.update(retrieval=retrieval, top_k=top_k, retriever=retriever, generator=generator)
    if predictions:
        write_jsonl(predictions, rows)
    if output:
        _write_json(output, metrics)
    typer.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))


@app.command()
def convert(fmt: str = typer.Option(..., "--format", help="squad | nq-open | hotpotqa"),
            input_path: str = typer.Option(..., "--input"), out: Path = typer.Option(..., "--out"),
            test_fraction: float = typer.Option(0.0, "--test-fraction", help="> 0: also split by title into train/test"),
            seed: int = typer.Option(0, "--seed")):
    """Convert a public QA file to the JSONL contract: DIR/corpus.jsonl + DIR/qa.jsonl (or train/test)."""
    from fedrag.data import converters, write_jsonl
    from fedrag.errors import FedragError

    if fmt not in converters.FORMATS:
        raise FedragError(f"unknown format '{fmt}' (choose from {', '.join(converters.FORMATS)})")
    passages, examples = converters.FORMATS[fmt](input_path)
    write_jsonl(out / "corpus.jsonl", passages)
    if test_fraction > 0:
        train, test = converters.split_by_title(examples, passages, test_fraction, seed)
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "test.jsonl", test)
        typer.echo(f"{len(passages)} passages, {len(train)} train / {len(test)} test questions -> {out}")
    else:
        write_jsonl(out / "qa.jsonl", examples)
        typer.echo(f"{len(passages)} passages, {len(examples)} questions -> {out}")


def _register_extensions() -> None:
    """Commands of the training and federation layers live in their own modules."""
    from fedrag import cli_fed, cli_quickstart, cli_train  # noqa: F401


def main() -> None:
    import os
    import warnings

    from fedrag.errors import FedragError

    if os.environ.get("FEDRAG_VERBOSE") != "1":  # library deprecation chatter is not for CLI users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)

    try:
        _register_extensions()
    except ImportError:  # pragma: no cover - during partial installs
        pass
    try:
        app(standalone_mode=False)
    except FedragError as exc:
        typer.echo(f"fedrag: error: {exc}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("fedrag: aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            typer.echo(f"fedrag: error: {exc.format_message()}", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":  # `python -m fedrag.cli`: run the registered app, not this module's copy
    from fedrag.cli import main as _main

    _main()
