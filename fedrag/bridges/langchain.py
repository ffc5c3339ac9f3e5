"""LangChain bridge: `FedragRetriever` (`BaseRetriever`) and `FedragLLM` (`LLM`).

    from fedrag.bridges.langchain import FedragLLM, FedragRetriever
    retriever = FedragRetriever(rag=rag, k=5)   # retriever.invoke("question") -> [Document]
    llm = FedragLLM(rag=rag)                    # llm.invoke(prompt) -> str

A document's `id` is the fedrag passage id; `metadata` holds its `title` and
retrieval `score`. `FedragLLM` generates from a prompt the chain built, with the
system's generation settings (`max_new_tokens`, beams, sampling). `rag` may also be
given positionally, as in the LlamaIndex bridge. A wrong `rag` or `k`, or a system
without a generator given to `FedragLLM`, fails at construction with a `FedragError`.
"""

from __future__ import annotations

from typing import Any

from fedrag._env import require

require("langchain_core", "fedrag[langchain]")

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.llms import LLM  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402

from fedrag.bridges import check_k, check_query, check_rag  # noqa: E402
from fedrag.rag import RAGSystem  # noqa: E402


class FedragRetriever(BaseRetriever):
    """The top `k` passages (default: the system's `top_k`) of a fedrag RAG system.

    Raises:
        FedragError: `rag` is not a RAG system, or `k` is not an integer >= 1.
    """

    rag: Any
    k: int | None = None

    def __init__(self, rag: RAGSystem | None = None, k: int | None = None, **kwargs: Any):
        # checked here, not by pydantic: its errors are multi-line, and k=0 would pass
        super().__init__(rag=check_rag(rag), k=check_k(k), **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        rag: RAGSystem = self.rag
        (hits,) = rag.retrieve([check_query(query)], self.k or rag.top_k)
        return [
            Document(
                page_content=h.passage.text,
                id=h.passage.id,
                metadata={"id": h.passage.id, "title": h.passage.title, "score": h.score},
            )
            for h in hits
        ]


class FedragLLM(LLM):
    """A fedrag generator (base model + adapter) as a LangChain LLM.

    Raises:
        FedragError: `rag` is not a RAG system, or has no generator.
    """

    rag: Any

    def __init__(self, rag: RAGSystem | None = None, **kwargs: Any):
        super().__init__(rag=check_rag(rag, generator=True), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "fedrag"

    def _call(
        self, prompt: str, stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
    ) -> str:
        rag: RAGSystem = self.rag
        (text,) = rag.generator.generate([prompt], batch_size=1, settings=rag.settings)
        for s in stop or []:
            text = text.split(s)[0]
        return text
