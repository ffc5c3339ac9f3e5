"""LlamaIndex bridge: `FedragRetriever`, `FedragLLM` and `as_query_engine`.

    from fedrag.bridges.llama_index import FedragRetriever, as_query_engine
    nodes = FedragRetriever(rag, k=5).retrieve("question")   # [NodeWithScore], node_id = passage id
    response = as_query_engine(rag).query("question")        # str(response), response.source_nodes

`as_query_engine` answers with fedrag's own decoding (the one the generator was
trained for: concat, RAG-Sequence or RAG-Token), so its answers are `fedrag eval`'s.
`FedragLLM` is the generator as a LlamaIndex `CustomLLM`, for pipelines that build
their own prompts (e.g. `RetrieverQueryEngine.from_args(FedragRetriever(rag), llm=FedragLLM(rag))`).
A wrong `rag` or `k`, or a system without a generator given to `FedragLLM` or
`as_query_engine`, fails at construction with the LangChain bridge's `FedragError`.
"""

from __future__ import annotations

from typing import Any

from fedrag._env import require

require("llama_index.core", "fedrag[llama-index]")

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata  # noqa: E402
from llama_index.core.base.response.schema import Response  # noqa: E402
from llama_index.core.llms import CustomLLM  # noqa: E402
from llama_index.core.query_engine import CustomQueryEngine  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from fedrag.bridges import check_k, check_query, check_rag  # noqa: E402
from fedrag.rag import RAGSystem  # noqa: E402


def _nodes(hits) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=h.passage.id, text=h.passage.text, metadata={"title": h.passage.title}), score=h.score)
        for h in hits
    ]


class FedragRetriever(BaseRetriever):
    """The top `k` passages (default: the system's `top_k`) of a fedrag RAG system.

    Raises:
        FedragError: `rag` is not a RAG system, or `k` is not an integer >= 1.
    """

    def __init__(self, rag: RAGSystem, k: int | None = None, **kwargs: Any):
        self.rag, self.k = check_rag(rag), check_k(k)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        (hits,) = self.rag.retrieve([query_bundle.query_str], self.k or self.rag.top_k)
        return _nodes(hits)


class FedragLLM(CustomLLM):
    """A fedrag generator as a LlamaIndex LLM (completion only).

    Raises:
        FedragError: `rag` is not a RAG system, or has no generator.
    """

    rag: Any
    context_window: int = 2048
    num_output: int = 32

    def __init__(self, rag: RAGSystem, **kwargs: Any):
        rag = check_rag(rag, generator=True)
        super().__init__(rag=rag, num_output=rag.settings.max_new_tokens, **kwargs)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.num_output, model_name="fedrag")

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        (text,) = self.rag.generator.generate([prompt], batch_size=1, settings=self.rag.settings)
        return CompletionResponse(text=text)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted, **kwargs)


class _FedragQueryEngine(CustomQueryEngine):
    rag: Any

    def custom_query(self, query_str: str) -> Response:
        (out,) = self.rag.answer([check_query(query_str)])
        return Response(response=out.answer or "", source_nodes=_nodes(out.hits[: self.rag.top_k]))


def as_query_engine(rag: RAGSystem) -> CustomQueryEngine:
    """A LlamaIndex query engine that retrieves and answers exactly as `fedrag eval` does.

    Raises:
        FedragError: `rag` is not a RAG system, or has no generator (its answers would
            be the string `"None"`).
    """
    return _FedragQueryEngine(rag=check_rag(rag, generator=True))
