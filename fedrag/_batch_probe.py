"""The largest batch that fits a device's free memory, found by running the work itself.

A probe runs a step at growing batch sizes (doubling, then bisecting between the last
that fit and the first that ran out of memory, to within 1/32) and keeps the largest that
fit less 1/20 of it (room for batches longer than the probe's; a batch under 20 keeps all
of it). [`fedrag.train.batch_size`][fedrag.train.batch_size] probes a training step,
`fedrag eval` a batch of answers.
"""

from __future__ import annotations

import gc
from typing import Callable

import torch

from fedrag import _faults
from fedrag.errors import FedragError

AUTO = "auto"
CAP = 1024  # no probe beyond this many questions a step


def probing(device: torch.device) -> bool:
    """Whether `auto` probes on `device` (CUDA, or a test's simulated memory limit)."""
    return device.type == "cuda" or _faults.memory_limit() is not None


def _fits(step: Callable[[int], None], batch: int) -> bool:
    limit = _faults.memory_limit()
    try:
        if limit is not None and batch > limit:
            raise torch.OutOfMemoryError(f"simulated: {batch} > {limit}")
        step(batch)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        # what a probe left (an OOM's traceback holds its frames' tensors) must be returned to
        # CUDA's caching allocator before the next, larger one; on the CPU only a simulated
        # limit probes, and a full collection of a process holding transformers costs ~0.3 s
        if torch.cuda.is_available():
            gc.collect()
            torch.cuda.empty_cache()


def largest_batch(step: Callable[[int], None], limit: int) -> int:
    """The largest `b <= limit` for which `step(b)` does not run out of memory (assumed
    monotone in `b`), less 1/20 of it when memory was the limit; one line when not even
    one question fits. Within 1/32 + 1/20 (< 10 %) of the largest that ran."""
    lo, hi, b = 0, None, 1
    while True:
        if not _fits(step, b):
            hi = b
            break
        lo = b
        if b >= limit:
            break
        b = min(b * 2, limit)
    if lo == 0:
        raise FedragError("--batch-size auto: not even one question a step fits in the device's free memory")
    if hi is None:  # the whole limit fits: no larger batch exists to leave room for
        return lo
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(step, mid) else (lo, mid)
    return lo - lo // 20
