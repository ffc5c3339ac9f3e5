"""fedrag: fine-tune Retrieval-Augmented Generation systems centrally or with Flower.

Pipeline: data → retrieve (store, retriever) → generate/score (generator) → losses →
train (stages) → strategies → federation (converter to Flower).

`import fedrag` is cheap and has no side effects: names load on first use, and
process-wide defaults (offline Hugging Face, quiet Flower) are applied by the entry
points (the CLI, the Flower apps, [`simulate`][simulate] / [`deploy`][deploy]), or by calling
[`fedrag.apply_defaults`][fedrag.apply_defaults] yourself.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    # data
    "Example": "fedrag.data",
    "Passage": "fedrag.data",
    "load_corpus": "fedrag.data",
    "load_qa": "fedrag.data",
    "write_jsonl": "fedrag.data",
    # retrieve / generate / the RAG system
    "KnowledgeStore": "fedrag.retrieve",
    "Retriever": "fedrag.retrieve",
    "Searcher": "fedrag.retrieve",
    "QdrantIndex": "fedrag.retrieve",  # qdrant-client is imported when the index first builds, not here
    "Generator": "fedrag.generate",
    "GenerationSettings": "fedrag.generate.decoding",
    "RAGSystem": "fedrag.rag",
    "build_rag": "fedrag.pipeline",
    "build_training_rag": "fedrag.pipeline",
    # training
    "Stage": "fedrag.train",
    "StepOutput": "fedrag.train",
    "TrainConfig": "fedrag.train",
    "train_stage": "fedrag.train",
    "ContrastiveStage": "fedrag.train",
    "LSRStage": "fedrag.train",
    "RALTStage": "fedrag.train",
    "RAGSequenceStage": "fedrag.train",
    "RAGTokenStage": "fedrag.train",
    "make_stage": "fedrag.train",
    # strategies, search, comparison
    "Strategy": "fedrag.strategies",
    "Phase": "fedrag.strategies",
    "custom": "fedrag.strategies",
    "make_strategy": "fedrag.strategies",
    "save_outputs": "fedrag.strategies",
    "STRATEGIES": "fedrag.strategies",
    "search_lr": "fedrag.strategies.lr_search",
    "compare": "fedrag.strategies.compare",
    "CompareSettings": "fedrag.strategies.compare",
    # evaluation
    "evaluate": "fedrag.evaluate",
    # federation
    "FedTask": "fedrag.federation",
    "to_flower": "fedrag.federation",
    "simulate": "fedrag.federation",
    "deploy": "fedrag.federation",
    # process defaults
    "apply_defaults": "fedrag._env",
}
__all__ = sorted(_EXPORTS)


class _Package(types.ModuleType):
    """fedrag's module type. Importing a subpackage binds it on its parent, and `evaluate`
    names both a subpackage and the function fedrag exports from it: whichever came first,
    `fedrag.evaluate` is the function (`from fedrag.evaluate import ...` still reads the
    subpackage from `sys.modules`)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedrag' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
