"""The stages' choice lists, as `Literal` types: importable without torch (a site's
ClientApp checks its run config against them before anything heavy loads)."""

from __future__ import annotations

from typing import Literal

RaltMode = Literal["all-in-one", "per-passage"]
StageName = Literal["contrastive", "lsr", "ralt", "rag-sequence", "rag-token", "multi-task"]
