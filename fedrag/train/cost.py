"""Cost accounting: wall time, examples, tokens, passes, estimated FLOPs, peak memory."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@dataclass
class Cost:
    """Counters for one stage (or a sum of stages).

    FLOPs are estimated as `2 · N · T` for a forward pass over `T` tokens of a
    model with `N` parameters and `4 · N · T` more when a backward pass runs
    through it (activations' and weights' gradients), the usual dense-transformer rule.
    """

    name: str = ""
    wall_s: float = 0.0
    steps: int = 0
    examples: int = 0
    retriever_tokens: int = 0
    generator_tokens: int = 0
    forward_passes: int = 0
    backward_passes: int = 0
    flops: float = 0.0
    peak_memory_mb: float = 0.0
    retriever_tokens_per_s: float = 0.0
    generator_tokens_per_s: float = 0.0
    batch_size: int = 0  # questions a step, as trained (what --batch-size auto chose); 0 in a sum of stages

    def add(self, other: "Cost") -> "Cost":
        out = Cost(name=self.name or other.name)
        for f in (
            "wall_s",
            "steps",
            "examples",
            "retriever_tokens",
            "generator_tokens",
            "forward_passes",
            "backward_passes",
            "flops",
        ):
            setattr(out, f, getattr(self, f) + getattr(other, f))
        out.peak_memory_mb = max(self.peak_memory_mb, other.peak_memory_mb)
        # one stage continued (a resume) keeps its batch; a sum of different stages has none
        batches = {self.batch_size, other.batch_size} - {0}
        out.batch_size = batches.pop() if len(batches) == 1 else 0
        return out.with_throughput()

    def with_throughput(self) -> "Cost":
        """Fill tokens per second (through each model, training included) from the counters."""
        if self.wall_s > 0:
            self.retriever_tokens_per_s = self.retriever_tokens / self.wall_s
            self.generator_tokens_per_s = self.generator_tokens / self.wall_s
        return self

    __add__ = add

    def to_dict(self) -> dict:
        return asdict(self)


class CostMeter:
    """Accumulates [`Cost`][Cost] from the loop's step outputs."""

    def __init__(self, name: str, retriever_params: int, generator_params: int):
        self.cost = Cost(name=name)
        self.n_r, self.n_g = retriever_params, generator_params
        self._t0 = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def step(self, out, n_examples: int) -> None:
        c = self.cost
        c.examples += n_examples
        c.retriever_tokens += out.retriever_tokens
        c.generator_tokens += out.generator_tokens
        c.forward_passes += int(out.retriever_tokens > 0) + int(out.generator_tokens > 0)
        c.backward_passes += int(out.retriever_grad) + int(out.generator_grad)
        c.flops += 2 * self.n_r * out.retriever_tokens * (3 if out.retriever_grad else 1)
        c.flops += 2 * self.n_g * out.generator_tokens * (3 if out.generator_grad else 1)

    def finish(self, steps: int) -> Cost:
        self.cost.steps = steps
        self.cost.wall_s = time.perf_counter() - self._t0
        gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
        self.cost.peak_memory_mb = max(gpu, _peak_rss_mb())
        return self.cost.with_throughput()


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0
