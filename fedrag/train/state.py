"""Which parameters a stage trains, freezing the rest, and moving them as named tensors.

Names are prefixed `retriever.` (query encoder) or `generator.` (LoRA adapter or
full LM). These dicts are what checkpoints store and what Flower messages carry.
"""

from __future__ import annotations

import torch


def trainable_parameters(rag, trains: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    params: dict[str, torch.nn.Parameter] = {}
    if "retriever" in trains:
        params.update({f"retriever.{n}": p for n, p in rag.retriever.trainable_parameters().items()})
    if "generator" in trains:
        if rag.generator is None:
            raise ValueError("this stage trains the generator but the RAG system has none")
        params.update({f"generator.{n}": p for n, p in rag.generator.trainable_parameters().items()})
    return params


def freeze_except(rag, trains: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """Set `requires_grad` on exactly the stage's parameters; return them by name."""
    rag.retriever.query_encoder.requires_grad_(False)
    rag.retriever.passage_encoder.requires_grad_(False)
    if rag.generator is not None:
        rag.generator.model.requires_grad_(False)
    params = trainable_parameters(rag, trains)
    for p in params.values():
        p.requires_grad_(True)
    return params


def get_state(rag, trains: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the stage's trainable tensors."""
    return {n: p.detach().cpu().clone() for n, p in trainable_parameters(rag, trains).items()}


def set_state(rag, state: dict[str, torch.Tensor]) -> None:
    """Copy named tensors into the model (names as produced by [`get_state`][get_state])."""
    params = trainable_parameters(rag, tuple({n.split(".", 1)[0] for n in state}))
    missing = set(state) - set(params)
    if missing:
        raise KeyError(f"unknown parameter names: {sorted(missing)[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(torch.as_tensor(t, dtype=params[n].dtype))
