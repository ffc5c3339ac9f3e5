"""Retrieval scores with gradients, shared by the stages that train or score the retriever."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fedrag.rag import RAGSystem


def retrieve_scores(
    rag: RAGSystem, questions: list[str], k: int, grad: bool, train_passages: bool = False
) -> tuple[torch.Tensor, list[list[int]], int]:
    """Top-k store positions, their scores `q · p` as a `[B, k]` tensor, and the
    tokens the retriever encoded.

    FAISS picks the positions (with a detached query); the scores are recomputed from
    the (differentiable, when `grad`) query embedding and the store's fixed passage
    embeddings, so gradients reach the query encoder. With `train_passages` the top-k
    passages are re-embedded with gradients instead (see [`embed_passages`][embed_passages]).
    """
    q, tokens = rag.retriever.embed_queries(questions, grad=grad)
    _, pos = rag.store.search(q.detach(), k)
    if train_passages:
        emb = embed_passages(rag, pos.reshape(-1).tolist())
        passages, tokens = emb.vectors.view(*pos.shape, -1), tokens + emb.tokens
    else:
        passages = rag.store.rows(pos, q.device)  # [B, k, d]: those rows only, whatever the store's size
    return torch.einsum("bd,bkd->bk", q, passages), pos.tolist(), tokens


def embed_passages(rag: RAGSystem, positions: list[int]):
    """Store passages re-embedded *with gradients* by the shared encoder
    ([`Embedded`][fedrag.retrieve.retriever.Embedded]: vectors `[n, d]` and token count).

    Training the passage side makes the store's embeddings stale: re-encode it
    afterwards with [`fedrag.rag.RAGSystem.reencode_store`][fedrag.rag.RAGSystem.reencode_store]."""
    return rag.retriever.embed_passages_with_grad([rag.store.passages[i].as_text() for i in positions])


def passages_at(rag: RAGSystem, pos: list[list[int]]):
    """The store's passages at `pos`, row by row."""
    return [[rag.store.passages[p] for p in row] for row in pos]
