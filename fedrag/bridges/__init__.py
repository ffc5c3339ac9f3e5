"""Bridges: a fedrag-tuned RAG system (retriever + knowledge store + generator, decoded as
it was trained) used from the RAG frameworks applications are built with.

* :mod:`fedrag.bridges.langchain`: ``FedragRetriever`` (a LangChain ``BaseRetriever``)
  and ``FedragLLM`` (a LangChain ``LLM``); extra ``fedrag[langchain]``.
* :mod:`fedrag.bridges.llama_index`: ``FedragRetriever`` (a LlamaIndex retriever),
  ``FedragLLM`` (a LlamaIndex ``CustomLLM``) and ``as_query_engine`` (retrieval and the
  matched decoding in one query engine); extra ``fedrag[llama-index]``.

Each takes a :class:`fedrag.rag.RAGSystem`, e.g. ``fedrag.build_rag(corpus,
"runs/ra-dit/retriever", "runs/ra-dit/generator")``: what the application retrieves and
answers is what ``fedrag eval`` measured.
"""
