"""Training settings: one dataclass, the single source of truth for every option.

Each field's default and `metadata["help"]` are what `fedrag train` / `compare` /
`search-lr` / `federate` offer (`fedrag.cli.options.field_option`); choices are
`Literal` types, and every value is validated once, when the object is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, Union

from fedrag._settings import check_choices, names, setting
from fedrag.models import WeightDtype


Precision = WeightDtype  # the same choices: a compute precision here, the weights' dtype when loading
BestMetric = Literal["auto", "f1", "em", "recall@5", "answer_recall@5", "mrr@10"]
BatchSize = Union[int, Literal["auto"]]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial", "inverse_sqrt"]
# held-out questions a selection or a round's evaluation scores unless told (search-lr's and compare
# --search's --val-limit, the federated server's --val-limit); `fedrag train` validates on all of --val
VAL_LIMIT = 50


def _f(default, help: str, **cli):
    return setting(default, help, **cli)


@dataclass
class TrainConfig:
    """Optimisation settings, validated when built. `steps` wins over `epochs` when given.

    Change a copy with [`set`][set] (it marks the values as the user's own); a plain
    `dataclasses.replace` keeps `explicit` as it was, so a stage's defaults may still
    replace a replaced value.

    Each field's `metadata["help"]` is its documentation; the CLI options and the
    Flower app config are derived from these fields."""

    steps: int | None = _f(None, "optimizer steps per phase (wins over --epochs)", round_set=True)
    epochs: float = _f(1.0, "passes over the training set per phase (when --steps is not given)", round_set=True)
    min_steps: int = _f(0, "at least this many steps when they come from --epochs (small training sets)", round_set=True)
    batch_size: BatchSize = _f(
        4,
        "questions per step; auto: the largest batch the GPU's free memory holds (a short probe, "
        "then a margin; on CPU the stage's default)",
    )
    grad_accum: int = _f(1, "batches accumulated per optimizer step")
    lr_generator: float = _f(3e-4, "generator learning rate (LoRA adapter or full model)")
    lr_retriever: float = _f(2e-5, "retriever learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    scheduler: Scheduler = _f("linear", "learning-rate schedule (transformers' get_scheduler)")
    warmup_ratio: float = _f(0.1, "fraction of the steps spent warming up")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    seed: int = _f(0, "random seed (data order, LoRA init)")
    eval_every: int = _f(0, "validate every N steps (0: only at the end, if --val is given)", flag="--evaluate-every")
    checkpoint_every: int = _f(0, "checkpoint every N steps (0: never)")
    keep_best: bool = _f(
        False,
        "validate before the first step and every --evaluate-every steps, and end with the best "
        "weights (no --val: a fifth of --train is set aside, by title); --keep-last ends with the "
        "last; the lsr stage keeps its best unless told",
        flag="--keep-best/--keep-last",
        stage_default_on_sites=False,  # a site's round ends with the weights it trained, for the server
    )
    best_metric: BestMetric = _f(
        "auto", "what --keep-best selects on (auto: F1 when validation answers questions, else Recall@5)"
    )
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: less memory, slower steps")
    dtype: Precision = _f(
        "auto",
        "training precision: autocast, and the frozen base under a LoRA adapter (the "
        "adapter and full fine-tuning stay float32); auto = bfloat16 on a GPU that "
        "supports it, else float32; float16 needs a CUDA GPU (loss scaling)",
    )
    score_batch_size: int | None = _f(
        None,
        "rows per generator scoring forward (exact: each chunk is recomputed "
        "in backward); trades time for memory, default all rows at once",
    )
    progress: bool = _f(False, "show a progress bar", cli=False, identity=False)
    report_to: str = _f(
        "none",
        "experiment tracking, as Hugging Face's Trainer: none, all, or a comma-separated "
        "list of tensorboard, mlflow, wandb (configured by their own environment variables)",
        identity=False,
        to_sites=False,  # a federated run's server tracks each round's global and per-site metrics
    )
    run_name: str = _f("", "name of the tracked run (default: the output directory's name)", identity=False)
    tracking_dir: str = _f("", "where TensorBoard and W&B files go (default: the stage's output directory)", identity=False)
    explicit: tuple[str, ...] = _f(
        (),
        "the fields the user set (default: those passed to the constructor): a "
        "stage's own defaults (Stage.defaults) never replace them",
        cli=False,
        identity=False,
    )

    def __post_init__(self):
        from fedrag.errors import FedragError, check_finite

        check_finite(self)
        check_choices(self)  # --scheduler, --dtype, --best-metric: from their Literal types
        if self.steps is not None and self.steps < 1:
            raise FedragError(f"--steps must be >= 1, got {self.steps} (a run that trains nothing is not a result)")
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)):
            raise FedragError(f"--batch-size must be a whole number or auto, got '{self.batch_size}'")
        if (self.batch_size != "auto" and self.batch_size < 1) or self.grad_accum < 1:
            raise FedragError(f"--batch-size and --grad-accum must be >= 1, got {self.batch_size} and {self.grad_accum}")
        if self.score_batch_size is not None and self.score_batch_size < 1:
            raise FedragError(f"--score-batch-size must be >= 1, got {self.score_batch_size}")
        from fedrag.train.tracking import parse_report_to

        parse_report_to(self.report_to)  # an unknown integration fails here, before any model loads
        names = {f.name for f in fields(self)}
        unknown = [n for n in self.explicit if n not in names]
        if unknown:
            raise FedragError(f"TrainConfig.explicit names no setting: '{unknown[0]}'")
        self.explicit = tuple(self.explicit)
        if self.epochs <= 0 or min(self.lr_generator, self.lr_retriever) < 0 or not 0 <= self.warmup_ratio < 1:
            raise FedragError("--epochs must be > 0, learning rates >= 0 and --warmup-ratio in [0, 1)")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise FedragError("--weight-decay and --max-grad-norm must be >= 0")
        if min(self.min_steps, self.eval_every, self.checkpoint_every) < 0:
            raise FedragError("--min-steps, --evaluate-every and --checkpoint-every must be >= 0")

    def total_steps(self, n_examples: int) -> int:
        """The optimizer steps of a run over `n_examples` (`batch_size` resolved from auto)."""
        if self.steps is not None:
            return self.steps
        return max(1, self.min_steps, math.ceil(self.epochs * n_examples / (self.batch_size * self.grad_accum)))

    def tracked(self) -> dict:
        """The settings that shape the weights (all but `UNTRACKED`: those declared `identity=False`), as plain values."""
        from dataclasses import asdict

        untracked = names(type(self), identity=False)
        return {k: v for k, v in asdict(self).items() if k not in untracked}

    def set(self, **values) -> "TrainConfig":
        """A copy with `values` set as the user's own (`explicit`): a stage's defaults
        do not replace them (e.g. a learning-rate search's grid point)."""
        from dataclasses import replace

        return replace(self, **values, explicit=tuple(dict.fromkeys((*self.explicit, *values))))


def stage_defaults(cls, defaults: dict | None, explicit: tuple = ()) -> dict:
    """The part of a stage's preferred settings (`Stage.defaults`) that applies to settings
    of class `cls` whose user-set names are `explicit`: those the user did not set."""
    from fedrag.errors import FedragError

    unknown = sorted(set(defaults or {}) - {f.name for f in fields(cls)})
    if unknown:
        raise FedragError(
            f"a stage's defaults name no training setting: '{unknown[0]}' (Stage.defaults holds "
            "TrainConfig fields; stage options are the stage's own dataclass fields)"
        )
    return {k: v for k, v in (defaults or {}).items() if k not in explicit}


def record_explicit(cls, join: bool = False):
    """Make `cls`'s dataclass `__init__` fill its `explicit` field, when not given,
    with the names of the fields passed to it (a comma-separated string if `join`): so
    `TrainConfig(lr_retriever=2e-5)` keeps that rate where a stage prefers another."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        if "explicit" not in kwargs:
            names = [f.name for f in fields(cls)][: len(args)] + list(kwargs)
            kwargs["explicit"] = ",".join(names) if join else tuple(names)
        init(self, *args, **kwargs)

    __init__.__wrapped__ = init
    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__
    return cls


record_explicit(TrainConfig)

# the settings that change no weight: not part of what a resumed run or comparison must match
UNTRACKED = names(TrainConfig, identity=False)
