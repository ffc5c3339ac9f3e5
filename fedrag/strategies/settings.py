"""What a run trains and with which models: the settings every entry point shares.

`fedrag train`, `compare`, `search-lr`, `federate` and a federated site read
these fields (the federated task carries them with `fedrag._settings.same`), so
a model default, a choice list or a help text is written here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from fedrag._settings import check_choices, setting
from fedrag.errors import FedragError
from fedrag.models import Quantize
from fedrag.retrieve.choices import TOP_K, IndexRefresh
from fedrag.strategies.choices import SearchMode, StrategyName, TwoPhaseLoss, TwoPhaseOrder
from fedrag.train.choices import RaltMode


@dataclass
class PlanSettings:
    """The models and the plan's options (the strategy or stage itself is chosen apart)."""

    retriever: str = setting("minilm", "bundled name (minilm), directory, or Hub id")
    generator: str = setting("smollm2-135m", "bundled name (smollm2-135m), directory, .gguf, Hub id, or 'none'")
    lora: bool = setting(True, "LoRA adapter (default) or full fine-tuning of the generator", flag="--lora/--full")
    retriever_lora: bool | None = setting(
        None,
        "a LoRA adapter on the retriever instead of all its weights (trained at lr 1e-3 unless "
        "--lr-retriever is given), saved merged; default: on for federated runs (only the adapter "
        "travels, ~0.4 MB a round for MiniLM against 90.9 MB), off centrally",
        flag="--retriever-lora/--retriever-full",
    )
    quantize: Quantize = setting("none", "4bit/8bit: QLoRA on a bitsandbytes base (CUDA GPU only)")
    top_k: int = setting(TOP_K, "passages retrieved per question")
    ralt_mode: RaltMode = setting("all-in-one", "RALT: all passages in one prompt, or one example per passage")
    two_phase_loss: TwoPhaseLoss = setting("rag-sequence", "two-phase: the retriever phase's loss")
    two_phase_order: TwoPhaseOrder = setting("generator-first", "two-phase: which phase runs first")
    train_passages: bool | None = setting(
        None,
        "contrastive or lsr stage: also train the passage encoder "
        "(re-encodes the store); default: the stage's (on for contrastive)",
        flag="--train-passages/--query-only",
    )
    index_refresh: IndexRefresh = setting(
        "auto",
        "a store gone stale by training the passage side: re-embed it after each phase or round, or rerank "
        "(re-rank each query's candidates with fresh embeddings; cost independent of the store's size); "
        "auto: phase centrally, rerank on federated sites",
    )

    def __post_init__(self):
        check_choices(self)
        if self.top_k < 1:
            raise FedragError(f"--top-k must be >= 1, got {self.top_k}")

    def plan(self, strategy: str | None, stage: str | None):
        """The [`Strategy`][fedrag.strategies.base.Strategy] named by `strategy` (or a
        one-phase one for `stage`), built with these options."""
        from fedrag.strategies.library import plan_from_names

        return plan_from_names(
            strategy, stage, self.top_k, self.ralt_mode, self.two_phase_loss, self.two_phase_order, self.train_passages
        )


def _grid(values: str) -> tuple[float, ...]:
    return tuple(float(v) for v in values.split(","))


@dataclass
class SearchSettings:
    """The learning-rate grids of `search-lr` and `compare --search`."""

    lrs_generator: tuple[float, ...] = setting(_grid("1e-4,3e-4,1e-3"), "generator learning rates to try, comma-separated")
    lrs_retriever: tuple[float, ...] = setting(_grid("1e-5,3e-5,1e-4"), "retriever learning rates to try, comma-separated")
    mode: SearchMode = setting("auto", "auto: phase-wise for strategies whose phases train one side, the 2-D grid for joint")

    def __post_init__(self):
        import math

        for name in ("lrs_generator", "lrs_retriever"):
            values = tuple(getattr(self, name))
            if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
                raise FedragError(f"--{name.replace('_', '-')}: expected positive, finite learning rates, got {values}")
            setattr(self, name, values)
        check_choices(self)


__all__ = ["PlanSettings", "SearchMode", "SearchSettings", "StrategyName"]
