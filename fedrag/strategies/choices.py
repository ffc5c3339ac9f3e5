"""The strategies' choice lists, as `Literal` types: importable without torch (a site's
ClientApp checks its run config against them before anything heavy loads)."""

from __future__ import annotations

from typing import Literal

StrategyName = Literal["independent", "two-phase", "joint-sequence", "joint-token", "ra-dit", "multi-task"]
TwoPhaseLoss = Literal["rag-sequence", "rag-token", "lsr"]
TwoPhaseOrder = Literal["generator-first", "retriever-first"]
SearchMode = Literal["auto", "phase-wise", "grid"]
