"""The training precision: which dtype a step's autocast runs in."""

from __future__ import annotations

import torch

from fedrag.errors import FedragError


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for `name` on `device` (`auto`: bf16 where a GPU supports it)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name == "float16" and device.type != "cuda":
        raise FedragError("--dtype float16 needs a CUDA GPU (loss scaling); on CPU use --dtype bfloat16 or float32")
    return getattr(torch, name)
