"""`fedrag index`: build a knowledge store, or add and remove passages in a saved one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from fedrag._settings import field_help
from fedrag.cli.options import DEVICE, app, collect, settings, with_settings
from fedrag.retrieve.settings import StoreSettings
from fedrag.strategies.settings import PlanSettings


@app.command()
@with_settings(settings(StoreSettings, panel="Store"))
def index(
    out: Path = typer.Option(..., "--out", help="the store's directory (built, or changed in place by --add/--remove)"),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="corpus JSONL to build the store from"),
    retriever: str = typer.Option(PlanSettings.retriever, "--retriever", help=field_help(PlanSettings, "retriever")),
    add: Optional[str] = typer.Option(None, "--add", help="corpus JSONL whose passages are added to the store at --out"),
    remove: Optional[str] = typer.Option(
        None, "--remove", help="passage ids to remove from the store at --out: comma-separated, or a file of one id a line"
    ),
    device: str = DEVICE,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory whole"),
    **kw,
):
    """Encode a corpus into a knowledge store (resumable: run the same command again after
    a kill), or change a saved store in place with --add / --remove."""
    from fedrag.errors import FedragError

    cfg = collect(StoreSettings, kw)
    if (add or remove) and corpus:
        raise FedragError("--corpus builds a new store; --add/--remove change the one at --out: give one or the other")
    if not (add or remove or corpus):
        raise FedragError("give --corpus (build a store) or --add/--remove (change the store at --out)")
    if corpus:
        _build(corpus, retriever, out, device, overwrite, cfg)
    else:
        _update(out, retriever, add, remove, device, cfg)


def _retriever(name: str, device: str):
    from fedrag.pipeline import resolve_device
    from fedrag.retrieve import Retriever

    return Retriever.load(name, device=resolve_device(device))


def _build(corpus: str, retriever: str, out: Path, device: str, overwrite: bool, cfg: StoreSettings) -> None:
    from fedrag._io import check_out
    from fedrag.data import load_corpus
    from fedrag.retrieve import KnowledgeStore

    check_out(out, "index", overwrite)
    passages = load_corpus(corpus)
    ret = _retriever(retriever, device)
    t0 = time.perf_counter()
    store = KnowledgeStore.build(passages, ret, cfg.encode_batch, index=cfg.make_index(len(passages)), dtype=cfg.encode_dtype)
    _measure(store)
    store.save(out, cfg.vectors)
    typer.echo(
        f"indexed {len(store)} passages (dim {store.dim}, {store.info['encode_dtype']}, {_describe(store)}) "
        f"in {time.perf_counter() - t0:.1f}s -> {out}"
    )


def _measure(store) -> None:
    """Record an approximate index's recall against exact search in the manifest."""
    from fedrag.retrieve.index_quality import probe_recall

    if getattr(store.index, "approximate", False):
        store.info["recall"] = probe_recall(store)


def _describe(store) -> str:
    factory = getattr(store.index, "factory", "external index")
    rec = store.info.get("recall")
    return f"{factory}, recall@{rec['k']} {rec['recall']:.3f} vs exact" if rec else f"{factory}, exact"


def _update(out: Path, retriever: str, add: str | None, remove: str | None, device: str, cfg: StoreSettings) -> None:
    from fedrag.retrieve import KnowledgeStore
    from fedrag.retrieve.update import add_passages, remove_passages

    t0 = time.perf_counter()
    ret = _retriever(retriever, device)
    store = KnowledgeStore.load(out, retriever=ret)
    before, notes = len(store), []
    if remove:
        store, missing = remove_passages(store, _ids(remove))
        notes.append(f"removed {before - len(store)}" + (f" ({missing} ids not in the store)" if missing else ""))
    if add:
        from fedrag.data import load_corpus

        n = len(store)
        store, skipped = add_passages(store, load_corpus(add), ret, cfg.encode_dtype)
        notes.append(f"added {len(store) - n}" + (f" (skipped {skipped} whose id the store holds)" if skipped else ""))
    _measure(store)
    store.save(out, store.info.get("vectors", cfg.vectors))
    typer.echo(
        f"{', '.join(notes)}: {before} -> {len(store)} passages ({_describe(store)}) in {time.perf_counter() - t0:.1f}s -> {out}"
    )


def _ids(remove: str) -> list[str]:
    path = Path(remove)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [x.strip() for x in remove.split(",") if x.strip()]
