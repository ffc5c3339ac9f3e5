"""Retrieval: dense retriever, knowledge store (FAISS or Qdrant), BM25 and hybrid search."""

from typing import TYPE_CHECKING

from fedrag._lazy import lazy_exports

if TYPE_CHECKING:  # the names below load on first use: `fedrag.retrieve.choices` needs no torch
    from fedrag.retrieve.choices import MODES
    from fedrag.retrieve.retriever import Retriever
    from fedrag.retrieve.search import Hit, Searcher
    from fedrag.retrieve.store import KnowledgeStore
    from fedrag.retrieve.vector_index import FaissIndex, QdrantIndex, VectorIndex

__all__ = ["MODES", "FaissIndex", "Hit", "KnowledgeStore", "QdrantIndex", "Retriever", "Searcher", "VectorIndex"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MODES": "fedrag.retrieve.choices",
        "Retriever": "fedrag.retrieve.retriever",
        "Hit": "fedrag.retrieve.search",
        "Searcher": "fedrag.retrieve.search",
        "KnowledgeStore": "fedrag.retrieve.store",
        **{n: "fedrag.retrieve.vector_index" for n in ("FaissIndex", "QdrantIndex", "VectorIndex")},
    },
)
