"""`fedrag demo-data`, `eval` and `convert` (`index`: [`fedrag.cli.index_cmd`][fedrag.cli.index_cmd])."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from fedrag.cli.options import DEVICE, IntOrName, app, choice_option, collect, settings, with_settings, write_json
from fedrag.generate.decoding import Decoding, GenerationSettings
from fedrag.models import WeightDtype
from fedrag.retrieve.choices import Retrieval
from fedrag.strategies.settings import PlanSettings

EvalDecoding = Literal["auto", Decoding]  # auto: the recorded decoding (Literals flatten: one list of decodings)
ConvertFormat = Literal["squad", "nq-open", "hotpotqa", "hf"]  # fedrag.data.converters.FORMATS, and hf


EVAL_BATCH = typer.Option(
    8,
    "--batch-size",
    click_type=IntOrName(["auto"]),
    metavar="N|auto",
    help="questions per batch; auto: the largest the GPU's free memory answers (a short probe; 8 on CPU)",
)


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="directory for corpus/train/test JSONL"),
    seed: int = typer.Option(0, "--seed", help="seed of the generated people and questions"),
    people: int = typer.Option(120, "--people", min=4, help="fictional people (about 2 passages and 5 questions each)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory whole"),
):
    """Write the built-in synthetic demo dataset (fictional people) as JSONL."""
    from fedrag._io import output_dir
    from fedrag.data import demo

    with output_dir(out, "data", overwrite) as tmp:
        counts = demo.write(tmp, seed=seed, n_people=people)
    typer.echo(
        f"wrote {out}/corpus.jsonl ({counts['passages']} passages), train.jsonl ({counts['train']}), test.jsonl ({counts['test']})"
    )


@app.command("eval")
@with_settings(
    settings(PlanSettings, only=("retriever", "generator", "quantize", "top_k"), panel="Models"),
    settings(GenerationSettings, exclude=("decoding", "gamma"), panel="Generation"),
)
def eval_cmd(
    test: str = typer.Option(..., "--test", help="test QA JSONL: the questions the models are scored on"),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="corpus JSONL (or --index)"),
    index_dir: Optional[str] = typer.Option(None, "--index", help="a store built by fedrag index or saved by train"),
    retrieval: str = choice_option("dense", "--retrieval", Retrieval, "dense (the retriever), bm25, or both fused"),
    test_limit: Optional[int] = typer.Option(
        None, "--test-limit", min=1, help="test on N questions spread evenly through --test", show_default="all"
    ),
    metrics_file: Optional[str] = typer.Option(None, "--metrics", help="write the metrics to this JSON file"),
    predictions: Optional[str] = typer.Option(
        None, "--predictions", help="write each question's answer and scores to this JSONL file"
    ),
    batch_size: str = EVAL_BATCH,
    device: str = DEVICE,
    decoding: str = choice_option(
        "auto",
        "--decoding",
        EvalDecoding,
        "auto: the decoding the generator was trained for (recorded in its directory), else concat",
        panel="Generation",
    ),
    gamma: Optional[float] = typer.Option(
        None,
        "--gamma",
        help="temperature of p(z|x) for rag-* decodings (default: the recorded one, else 0.1)",
        rich_help_panel="Generation",
    ),
    dtype: str = choice_option(
        "float32",
        "--dtype",
        WeightDtype,
        "weights' dtype of both models: float32 by default, the weights an --index was built with (auto: bfloat16 "
        "on a GPU that supports it; an --index must then be built at the same dtype). train's --dtype is "
        "another setting: its compute precision",
        panel="Models",
    ),
    device_map: Optional[str] = typer.Option(
        None, "--device-map", help="'auto': spread a generator larger than one device (accelerate)", rich_help_panel="Models"
    ),
    **kw,
):
    """Evaluate retrieval (Recall@k, answer-recall@k, MRR@10) and answers (EM, F1) on a QA set."""
    from fedrag.data import check_gold_ids, load_qa, write_jsonl
    from fedrag.evaluate import evaluate
    from fedrag.generate.decoding import resolve_settings
    from fedrag.pipeline import build_rag, resolve_device

    from fedrag.data.partition import evenly_spaced

    models = collect(PlanSettings, kw)
    retriever, generator, top_k = models.retriever, models.generator, models.top_k
    from dataclasses import fields

    settings = resolve_settings(
        decoding, generator, gamma, **{f.name: kw[f.name] for f in fields(GenerationSettings) if f.name in kw}
    )
    examples = evenly_spaced(load_qa(test), test_limit)
    rag = build_rag(
        corpus,
        retriever,
        generator,
        index_dir,
        retrieval,
        top_k,
        resolve_device(device),
        settings=settings,
        dtype=dtype,
        quantize=models.quantize,
        device_map=device_map,
    )
    check_gold_ids(examples, rag.store.passages, test)
    metrics = evaluate(rag, examples, batch_size=batch_size, progress=sys.stderr.isatty())
    rows = metrics.pop("_rows")
    metrics.update(retrieval=retrieval, top_k=min(top_k, len(rag.store)), retriever=retriever, generator=generator)
    metrics.update(index_report(rag.store))
    if predictions:
        write_jsonl(predictions, rows)
    if metrics_file:
        write_json(metrics_file, metrics)
    typer.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))


def index_report(store) -> dict:
    """The store's index and, for an approximate one, the recall its build measured."""
    out = {"index": getattr(store.index, "factory", type(store.index).__name__) or "Flat"}
    if store.info.get("recall"):
        rec = store.info["recall"]
        out[f"index_recall@{rec['k']}_vs_exact"] = rec["recall"]
    return out


@app.command()
def convert(
    fmt: str = choice_option(
        ...,
        "--format",
        ConvertFormat,
        "hf: a Hugging Face dataset (save_to_disk directory, Parquet/Arrow/JSON/CSV files, or a Hub id online)",
    ),
    input_path: str = typer.Option(..., "--input", help="the dataset file or directory"),
    out: Path = typer.Option(
        ..., "--out", help="directory for corpus.jsonl and train.jsonl (and test.jsonl with --test-fraction)"
    ),
    columns: str = typer.Option(
        "",
        "--columns",
        help="hf: FIELD=COLUMN,... for question, answers, id, gold_ids, "
        "context, title (QA) or text, id, title (corpus); dotted names reach nested columns",
    ),
    split: Optional[str] = typer.Option(None, "--split", help="hf: the split to read"),
    test_fraction: float = typer.Option(0.0, "--test-fraction", help="above 0: also split this fraction of titles off as test"),
    seed: int = typer.Option(0, "--seed", help="seed of the train/test split by title"),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="refuse a record that does not convert (null or empty "
        "required field, wrong type, repeated id) instead of skipping it with a count",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory whole"),
):
    """Convert a public QA file or a Hugging Face dataset to the JSONL contract:
    DIR/corpus.jsonl + DIR/qa.jsonl (or train/test). Records that do not convert are
    skipped and counted on stderr (--strict: refused); what is written is loaded back
    before it is published."""
    from fedrag._io import check_out, output_dir
    from fedrag.data import converters, write_jsonl
    from fedrag.data.hf import load_hf, parse_columns
    from fedrag.data.jsonl import check_dataset
    from fedrag.data.types import RecordLog
    from fedrag.errors import DataError, FedragError

    check_out(out, "data", overwrite)
    log = RecordLog(strict=strict)
    if fmt == "hf":
        passages, examples = load_hf(input_path, parse_columns(columns), split, log=log)
    elif columns or split:
        raise FedragError("--columns and --split apply to --format hf")
    else:
        passages, examples = converters.FORMATS[fmt](input_path, log=log)
    if not passages and not examples:
        raise FedragError(f"{input_path}: no rows to convert" + (f" ({log.summary()})" if log.summary() else ""))
    with output_dir(out, "data", overwrite, {"format": fmt, "skipped": log.skipped, "renamed": log.renamed}) as tmp:
        if passages:
            write_jsonl(tmp / "corpus.jsonl", passages)
        if not examples:
            summary = f"{len(passages)} passages -> {out}"
        elif test_fraction > 0:
            train, test = converters.split_by_title(examples, passages, test_fraction, seed)
            write_jsonl(tmp / "train.jsonl", train)
            write_jsonl(tmp / "test.jsonl", test)
            summary = f"{len(passages)} passages, {len(train)} train / {len(test)} test questions -> {out}"
        else:
            write_jsonl(tmp / "qa.jsonl", examples)
            summary = f"{len(passages)} passages, {len(examples)} questions -> {out}"
        try:  # the output is what index/train/eval will read: one that would not load is not published
            check_dataset(tmp)
        except DataError as exc:
            raise DataError(
                f"the converted data would not load, so nothing was written: {str(exc).replace(str(tmp), str(out))}"
            ) from None
    if log.summary():
        typer.echo(f"convert: {log.summary()}", err=True)
    typer.echo(summary)
