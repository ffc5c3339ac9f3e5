"""Retrieval's choice lists and its one default: importable without torch (a site's
ClientApp checks its run config against them before anything heavy loads)."""

from __future__ import annotations

from typing import Literal, get_args

Retrieval = Literal["dense", "bm25", "hybrid"]
MODES: tuple[str, ...] = get_args(Retrieval)
TOP_K = 3  # passages retrieved per question unless told: every stage, strategy, pipeline and CLI default
IndexRefresh = Literal["auto", "phase", "rerank"]
