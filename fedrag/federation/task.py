"""The federated task: everything a ServerApp and ClientApp need, as a flat config.

One :class:`FedTask` describes the run (models, plan, rounds, aggregator, DP). It
round-trips through a flat ``{str: scalar}`` dict, so the same task travels as a
Flower ``run_config`` (deployment: ``[tool.flwr.app.config]`` / ``--run-config``) or
is captured by the apps' closures (simulation from Python).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from typing import Literal, get_args

from fedrag.errors import FedragError

Aggregator = Literal["fedavg", "fedprox", "fedadam", "fedyogi"]
AGGREGATORS: tuple[str, ...] = get_args(Aggregator)


def _train(name: str):
    """A site's training setting: default and help are :class:`~fedrag.train.TrainConfig`'s
    (one definition; a site builds its TrainConfig from these)."""
    from fedrag.train.config import TrainConfig

    f = {f.name: f for f in fields(TrainConfig)}[name]
    return field(default=f.default, metadata=dict(f.metadata))


@dataclass
class FedTask:
    strategy: str = ""            # a named strategy or an import path "module:attribute" (a Strategy or a factory), or ...
    stage: str = ""               # ... a single stage
    retriever: str = "minilm"
    generator: str = "smollm2-135m"
    lora: bool = True
    retriever_lora: bool = field(default=False, metadata={"help": (
        "train a LoRA adapter on the query encoder: only the adapter travels (~0.4 MB a round for MiniLM, "
        "not 90.9 MB)")})
    top_k: int = 3
    ralt_mode: str = "all-in-one"
    two_phase_loss: str = "rag-sequence"
    rounds: int = 2               # rounds per phase
    local_steps: int = 10         # optimizer steps per client per round
    batch_size: int = _train("batch_size")
    lr_generator: float = _train("lr_generator")
    lr_retriever: float = _train("lr_retriever")
    warmup_ratio: float = _train("warmup_ratio")
    gradient_checkpointing: bool = _train("gradient_checkpointing")
    keep_optimizer: bool = False  # sites keep their AdamW moments between rounds of a phase (docs/federation.md)
    seed: int = _train("seed")
    aggregator: str = "fedavg"
    proximal_mu: float = 0.01     # FedProx only
    server_lr: float = 0.1        # FedAdam/FedYogi eta
    fraction: float = 1.0
    min_sites: int = 2
    dp_noise: float = 0.0         # > 0 enables central DP (client-side clipping + server noise)
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    out: str = ""                 # server output directory
    eval_corpus: str = ""         # server-side held-out evaluation (optional)
    eval_qa: str = ""
    eval_limit: int = 50
    evaluate_every: int = 1       # client-side evaluation every N rounds and at a phase's last round; 0: never
    round_timeout: float = field(default=3600.0, metadata={"help": (
        "seconds the server waits for a round's replies (and for --min-sites sites to be connected); "
        "fewer than --min-sites replies then end the run with an error, the last good round checkpointed")})
    device: str = "cpu"           # a site's --node-config 'device="cuda:1"' wins over this
    dtype: str = _train("dtype")
    score_batch_size: int = 0     # rows per scoring forward on the sites (0: all at once)
    explicit: str = field(default="", metadata={"help": (
        "the training settings the user set, comma-separated (default: those passed when the task is built); "
        "a stage's own defaults never replace them")})
    report_to: str = field(default="none", metadata={"help": (
        "the server tracks each round's global and per-site metrics: none, all, or tensorboard,mlflow,wandb "
        "(TensorBoard/W&B files in OUT/tracking)")})

    def __post_init__(self):
        from fedrag.errors import check_finite

        check_finite(self)  # before the range checks: nan passes both `< 0` and `> 0`
        if bool(self.strategy) == bool(self.stage):
            raise FedragError("a federated task needs exactly one of strategy or stage")
        if self.aggregator not in AGGREGATORS:
            raise FedragError(f"unknown aggregator '{self.aggregator}' (choose from {', '.join(AGGREGATORS)})")
        if self.rounds < 1 or self.local_steps < 1:
            raise FedragError("rounds and local steps must be >= 1")
        if not 0 < self.fraction <= 1:
            raise FedragError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.min_sites < 1 or self.batch_size < 1 or self.top_k < 1:
            raise FedragError("--min-sites, --batch-size and --top-k must be >= 1")
        if self.proximal_mu < 0 or self.server_lr <= 0 or self.eval_limit < 1:
            raise FedragError("--proximal-mu must be >= 0, --server-lr > 0 and --eval-limit >= 1")
        if self.dp_noise < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise FedragError("--dp-noise must be >= 0, --dp-clip > 0 and the DP delta in (0, 1)")
        from fedrag.train.tracking import parse_report_to

        parse_report_to(self.report_to)
        if self.round_timeout <= 0:
            raise FedragError("--round-timeout must be > 0")
        if self.evaluate_every < 0:
            raise FedragError("evaluate-every must be >= 0 (0 turns client-side evaluation off)")
        self.train_config()  # the sites' training settings, validated as TrainConfig validates them

    @property
    def dp_enabled(self) -> bool:
        """Central DP is on: sites clip, the server noises (the one test every layer uses)."""
        return self.dp_noise > 0

    def train_config(self, rnd: int = 1, prox_mu: float = 0.0):
        """The :class:`~fedrag.train.TrainConfig` a site trains round ``rnd`` of a phase
        with: ``local_steps`` steps, the schedule continuing across the phase's rounds."""
        from fedrag.train.config import TrainConfig

        names = {f.name for f in fields(TrainConfig)}
        explicit = tuple(n for n in self.explicit.split(",") if n in names)
        return TrainConfig(explicit=explicit, steps=self.local_steps, batch_size=self.batch_size, lr_generator=self.lr_generator,
                           lr_retriever=self.lr_retriever, warmup_ratio=self.warmup_ratio, seed=self.seed + rnd - 1,
                           prox_mu=prox_mu, gradient_checkpointing=self.gradient_checkpointing, dtype=self.dtype,
                           score_batch_size=self.score_batch_size or None,
                           schedule_total=self.rounds * self.local_steps, schedule_offset=(rnd - 1) * self.local_steps)

    def plan(self):
        """The Strategy this task federates: a named one, one imported from
        ``strategy="module:attribute"`` (a Strategy, or a callable returning one, called
        with ``top_k``), or a one-phase one for a single stage."""
        from fedrag.strategies import plan_from_names

        if ":" in self.strategy:
            return import_strategy(self.strategy, self.top_k)
        return plan_from_names(self.strategy or None, self.stage or None, self.top_k, self.ralt_mode, self.two_phase_loss)

    def to_config(self) -> dict:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config) -> "FedTask":
        """The task from a Flower run config (``-`` or ``_`` in keys). Audited: a key that
        is no task setting, or a value of the wrong type (text where a number belongs),
        is refused rather than ignored, so a run config carries nothing else to a site."""
        kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool, int)}
        names = {f.name: str(f.type) for f in fields(cls)}
        kw = {}
        for key, value in dict(config).items():
            name = key.replace("-", "_")
            if name not in names:
                raise FedragError(f"run config: '{key}' is not a fedrag task setting")
            ok = kinds.get(names[name], (object,))
            if not isinstance(value, ok) or (names[name] in ("int", "float") and isinstance(value, bool)):
                raise FedragError(f"run config: '{key}' must be {names[name]}, got {type(value).__name__}")
            kw[name] = bool(value) if names[name] == "bool" else value
        if "explicit" not in kw:  # a run config without the key: the settings that differ from the default were set
            defaults = {f.name: f.default for f in fields(cls)}
            kw["explicit"] = ",".join(k for k, v in kw.items() if k != "explicit" and v != defaults.get(k))
        return cls(**kw)


def _record_explicit():
    from fedrag.train.config import record_explicit

    record_explicit(FedTask, join=True)


_record_explicit()


def import_strategy(path: str, top_k: int = 3):
    """``"package.module:attribute"`` → a Strategy (Flower names its apps the same way)."""
    import importlib

    from fedrag.strategies import Strategy

    module, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise FedragError(f"cannot import strategy '{path}' ({type(exc).__name__}: {exc})") from None
    plan = obj
    if not isinstance(obj, Strategy) and callable(obj):
        try:
            plan = obj(top_k=top_k)
        except Exception as exc:  # noqa: BLE001 - a user's factory (or something that is none) fails in its own way
            raise FedragError(f"'{path}' is not a strategy factory: calling it with top_k={top_k} failed "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(plan, Strategy):
        raise FedragError(f"'{path}' is neither a Strategy nor a function returning one")
    return plan
