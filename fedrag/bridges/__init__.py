"""Bridges: a fedrag-tuned RAG system (retriever + knowledge store + generator, decoded as
it was trained) used from the RAG frameworks applications are built with.

* [`fedrag.bridges.langchain`][fedrag.bridges.langchain]: `FedragRetriever` (a LangChain `BaseRetriever`)
  and `FedragLLM` (a LangChain `LLM`); extra `fedrag[langchain]`.
* [`fedrag.bridges.llama_index`][fedrag.bridges.llama_index]: `FedragRetriever` (a LlamaIndex retriever),
  `FedragLLM` (a LlamaIndex `CustomLLM`) and `as_query_engine` (retrieval and the
  matched decoding in one query engine); extra `fedrag[llama-index]`.

Each takes a [`fedrag.rag.RAGSystem`][fedrag.rag.RAGSystem], e.g. `fedrag.build_rag(corpus,
"runs/ra-dit/retriever", "runs/ra-dit/generator")`: what the application retrieves and
answers is what `fedrag eval` measured.
"""

from __future__ import annotations

import numbers
from typing import Any

from fedrag.errors import FedragError

# one message for both frameworks: the same mistake reads the same in LangChain and LlamaIndex
NO_GENERATOR = "this RAG system has no generator (built with generator 'none')"


def check_rag(rag: Any, generator: bool = False):
    """`rag` itself if it is a [`RAGSystem`][fedrag.rag.RAGSystem] (with a generator when
    `generator`), checked when a bridge is built rather than on its first query.

    Raises:
        FedragError: not a RAG system, or no generator where one answers.
    """
    from fedrag.rag import RAGSystem

    if not isinstance(rag, RAGSystem):
        raise FedragError(
            f"rag must be a fedrag RAGSystem (e.g. fedrag.build_rag(corpus, retriever, generator)), got {type(rag).__name__}"
        )
    if generator and rag.generator is None:
        raise FedragError(NO_GENERATOR)
    return rag


def check_k(k: Any) -> int | None:
    """`k` as an int, or None (the system's `top_k`).

    Raises:
        FedragError: `k` is not a whole number >= 1 (`k=0` would otherwise fall back
            to `top_k` without a word; bools and strings are mistakes, not counts).
    """
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise FedragError(f"k must be an integer >= 1 (or None for the system's top_k), got {k!r}")
    return int(k)


def check_query(query: Any) -> str:
    """The query text; anything else would fail deep in a tokenizer.

    Raises:
        FedragError: `query` is not a string.
    """
    if not isinstance(query, str):
        raise FedragError(f"the query must be a string, got {type(query).__name__}")
    return query
