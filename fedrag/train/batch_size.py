"""`--batch-size auto` for training: the largest batch that fits the device's free memory.

On a CUDA device `fedrag._batch_probe` runs the real step's forward
and backward at growing batch sizes, with the optimizer's moments held in memory as they
will be. Elsewhere (CPU, MPS) memory is not what limits a step, so `auto` is the stage's
own default batch ([`Stage.defaults`][fedrag.train.protocol.Stage], else
[`TrainConfig`][fedrag.train.TrainConfig]'s).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable

import torch

from fedrag._batch_probe import AUTO, CAP, largest_batch, probing
from fedrag.train.state import freeze_except


def resolve(cfg, stage, rag, examples: list, dtype: torch.dtype) -> object:
    """`cfg` with `batch_size` an integer: `auto` found by probing `stage`'s step on `rag`'s
    device (see the module), anything else as it is."""
    if cfg.batch_size != AUTO:
        return cfg
    device = rag.retriever.device if rag.generator is None else rag.generator.device
    if not probing(device):
        default = (getattr(stage, "defaults", None) or {}).get("batch_size")
        base = {f.name: f.default for f in fields(cfg)}["batch_size"]
        return replace(cfg, batch_size=default or base)
    return replace(cfg, batch_size=largest_batch(_step_probe(stage, rag, examples, dtype), min(CAP, len(examples))))


def _step_probe(stage, rag, examples: list, dtype: torch.dtype) -> Callable[[int], None]:
    """`step(b)`: forward and backward of `stage` on `b` examples (no update) at compute
    precision `dtype`, with the AdamW moments of the trainable weights held meanwhile."""
    params = freeze_except(rag, stage.trains)
    device = next(iter(params.values())).device
    moments = sum(p.numel() * 4 * 2 for p in params.values())  # AdamW's two float32 moments

    def step(b: int) -> None:
        held = torch.empty(moments, dtype=torch.uint8, device=device) if device.type == "cuda" else None
        try:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = stage.loss(rag, examples[:b]).loss.float()
            loss.backward()
        finally:
            del held
            for p in params.values():
                p.grad = None

    return step
