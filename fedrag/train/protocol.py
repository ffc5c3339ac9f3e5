"""The stage interface every layer is written against: the loop, strategies, the LR
search, `compare` and the Flower converter. A user's own class that has these three
members works everywhere a built-in stage does (no subclassing needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # annotations only: no import at run time
    from fedrag.data.types import Example
    from fedrag.rag import RAGSystem


@dataclass
class StepOutput:
    """One batch's loss and what it cost (tokens through each model, which needed a backward)."""

    loss: torch.Tensor
    retriever_tokens: int = 0  # tokens through the retriever's encoders
    generator_tokens: int = 0  # tokens through the LM
    retriever_grad: bool = False  # did the retriever forward need a backward?
    generator_grad: bool = False
    # what `loss` averages over (answer tokens for a token-averaged loss); 0: the batch's examples.
    # Data-parallel training weights each process's loss by its share of the global batch's units.
    units: float = 0.0


@runtime_checkable
class Stage(Protocol):
    """`name` (used in logs and output folders); `trains`, a subset of
    `("retriever", "generator")` (the loop freezes everything else, so a frozen side
    stays bit-identical); `loss(rag, batch)`, one batch's [`StepOutput`][StepOutput].

    Optional: `decoding` (`{"decoding": ..., "gamma": ...}`), the decoding that
    matches how the stage trains the generator (see [`fedrag.generate.decoding`][fedrag.generate.decoding])."""

    name: str

    @property
    def trains(self) -> tuple[str, ...]: ...

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput: ...
