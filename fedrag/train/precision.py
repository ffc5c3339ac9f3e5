"""The training precision: which dtype a step's autocast runs in, and float16's loss scaling."""

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


class MixedPrecision:
    """A step's forward passes under autocast in `dtype` (none in float32); with float16,
    a `GradScaler` scales the loss before backward and skips a step whose gradients
    overflowed."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device_type, self.dtype = device.type, dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def autocast(self):
        """The context a forward pass runs in."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @property
    def skips_nonfinite(self) -> bool:
        """Whether the scaler skips a step with non-finite gradients itself (float16)."""
        return self.scaler.is_enabled()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, opt) -> None:
        """Gradients back at their true scale, for clipping."""
        self.scaler.unscale_(opt)

    def step(self, opt) -> None:
        """The optimizer step (skipped on overflow under float16), then the scale's update."""
        self.scaler.step(opt)
        self.scaler.update()
