"""Retrieval: dense retriever, FAISS knowledge store, BM25 and hybrid search."""

from fedrag.retrieve.retriever import Retriever
from fedrag.retrieve.search import MODES, Hit, Searcher
from fedrag.retrieve.store import KnowledgeStore

__all__ = ["MODES", "Hit", "KnowledgeStore", "Retriever", "Searcher"]
