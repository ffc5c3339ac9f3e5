"""Assemble components from model arguments and paths (shared by CLI, training, federation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrag._settings import check_choice
from fedrag.data.jsonl import load_corpus
from fedrag.errors import FedragError, StoreError
from fedrag.rag import RAGSystem
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher
from fedrag.retrieve.choices import TOP_K, Retrieval


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_store(
    corpus: str | list | None, retriever: Retriever, index: str | None = None, show_progress: bool = False
) -> KnowledgeStore:
    """Load `index` (checked against the retriever) or build a store from `corpus`
    (a JSONL path or already-loaded passages)."""
    if index:
        return KnowledgeStore.load(index, retriever=retriever)
    if not corpus:
        raise FedragError("give --corpus (to build an index) or --index (a saved one)")
    passages = load_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    return KnowledgeStore.build(passages, retriever, show_progress=show_progress)


def build_rag(
    corpus: str | None,
    retriever: str | None,
    generator: str | None,
    index: str | None = None,
    retrieval: str = "dense",
    top_k: int = TOP_K,
    device: str = "cpu",
    show_progress: bool = False,
    settings=None,
    dtype: str = "float32",
    quantize: str = "none",
    device_map: str | None = None,
) -> RAGSystem:
    """A ready RAG system from command-line style arguments (`generator='none'` → retrieval
    only); `settings` ([`GenerationSettings`][fedrag.generate.decoding.GenerationSettings]) default to the
    decoding recorded with a fedrag-trained generator. `dtype` / `quantize` /
    `device_map` set how the generator's weights load (see [`Generator.load`][fedrag.generate.generator.Generator.load])."""
    from fedrag.generate.decoding import resolve_settings

    from fedrag.generate import Generator

    check_choice(retrieval, Retrieval, "--retrieval")
    if top_k < 1:
        raise FedragError(f"--top-k must be >= 1, got {top_k}")
    if index and not Path(index).is_dir():
        raise StoreError(f"{index}: index directory not found")
    passages = load_corpus(corpus) if corpus else None  # user data is checked before any model loads
    if passages is not None and index:
        _check_index_corpus(index, corpus, passages)
        passages = None  # the saved index is used as it is
    if retrieval == "bm25" and (retriever in (None, "none")):
        ret = None
        passages = passages or KnowledgeStore.load(index).passages
        store = KnowledgeStore(passages, np.zeros((len(passages), 1), dtype=np.float32))
    else:
        ret = Retriever.load(retriever or "minilm", device=device, dtype=dtype)
        store = load_store(passages, ret, index, show_progress=show_progress)
    gen = (
        None
        if generator in (None, "none")
        else Generator.load(generator, device=device, dtype=dtype, quantize=quantize, device_map=device_map)
    )
    settings = settings or resolve_settings("auto", generator)
    return RAGSystem(Searcher(store, ret, retrieval), gen, top_k=top_k, settings=settings)


def _check_index_corpus(index: str, corpus: str, passages) -> None:
    """Refuse an index built from another corpus than `corpus` (both were given: the
    user means them to agree, and answers scored on a stale index would look valid)."""
    indexed = KnowledgeStore.load(index).passages
    if indexed != passages:
        differ = sum(a != b for a, b in zip(indexed, passages)) + abs(len(indexed) - len(passages))
        raise StoreError(
            f"{index} was built from another corpus than {corpus} ({len(indexed)} vs {len(passages)} "
            f"passages, {differ} differ): rebuild it with fedrag index, or drop --corpus"
        )


def build_training_rag(
    corpus: str,
    retriever: str,
    generator: str | None,
    lora: bool = True,
    top_k: int = TOP_K,
    device: str = "cpu",
    seed: int = 0,
    index: str | None = None,
    shared_retriever: bool = False,
    quantize: str = "none",
    retriever_lora: bool = False,
    dtype: str = "float32",
    index_refresh: str = "phase",
) -> RAGSystem:
    """A RAG system ready for training: dual-encoder retriever (`retriever_lora`: a LoRA
    adapter on its query encoder), store, generator (LoRA by default; `quantize="4bit"`
    for QLoRA on a GPU).

    `dtype` (`TrainConfig.dtype`: `auto`, `float32`, `bfloat16`, `float16`) is the
    precision of the generator's frozen base under a LoRA adapter: `bfloat16` holds the
    base in half the memory while the adapter, which the optimizer updates, stays
    float32 (as peft keeps it); `auto` is bfloat16 on a GPU that supports it, float32
    elsewhere. A fully trained generator (`lora=False`) and the retriever keep float32
    weights; the computation's precision comes from autocast in either case.
    `index_refresh` (`phase` | `rerank`): how the store follows a trained passage encoder
    ([`Searcher`][fedrag.retrieve.search.Searcher])."""
    from fedrag.generate import Generator
    from fedrag.generate.generator import training_weights_dtype

    passages = load_corpus(corpus) if not index else None
    ret = Retriever.load(retriever, device=device, shared=shared_retriever, lora=retriever_lora)
    store = load_store(passages, ret, index)
    gen = (
        None
        if generator in (None, "none")
        else Generator.load(
            generator,
            device=device,
            lora=lora,
            trainable=True,
            seed=seed,
            quantize=quantize,
            dtype=training_weights_dtype(dtype, lora),
        )
    )
    return RAGSystem(Searcher(store, ret, "dense", refresh=index_refresh), gen, top_k=top_k)
