"""Retrieval: dense retriever, knowledge store (FAISS or Qdrant), BM25 and hybrid search."""

from fedrag.retrieve.retriever import Retriever
from fedrag.retrieve.search import MODES, Hit, Searcher
from fedrag.retrieve.store import KnowledgeStore
from fedrag.retrieve.vector_index import FaissIndex, QdrantIndex, VectorIndex

__all__ = ["MODES", "FaissIndex", "Hit", "KnowledgeStore", "QdrantIndex", "Retriever", "Searcher", "VectorIndex"]
