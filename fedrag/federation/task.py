"""The federated task: everything a ServerApp and ClientApp need, as a flat config.

One [`FedTask`][FedTask] describes the run (models, plan, rounds, aggregator, DP). It
round-trips through a flat `{str: scalar}` dict, so the same task travels as a
Flower `run_config` (deployment: `[tool.flwr.app.config]` / `--run-config`) or
is captured by the apps' closures (simulation from Python).
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields
from typing import Literal, get_args, get_origin

from fedrag._settings import check_choices, names, same, setting
from fedrag.data.partition import Partition
from fedrag.errors import FedragError
from fedrag.retrieve.search import IndexRefresh
from fedrag.strategies.by_path import import_strategy
from fedrag.strategies.choices import TwoPhaseLoss, TwoPhaseOrder
from fedrag.train.config import VAL_LIMIT, BatchSize, Precision
from fedrag.train.choices import RaltMode

Aggregator = Literal["fedavg", "fedprox", "fedadam", "fedyogi"]
AGGREGATORS: tuple[str, ...] = get_args(Aggregator)


# the panels of `fedrag federate --help`, each setting's own (`setting(panel=...)`)
MODELS, TRAINING = "Models and plan", "Training on the sites"
AGGREGATION, EVALUATION = "Aggregation and privacy", "Evaluation and tracking"


def _train(name: str, panel: str = TRAINING):
    """A site's training setting: [`TrainConfig`][fedrag.train.TrainConfig]'s field, one definition."""
    from fedrag.train.config import TrainConfig

    return same(TrainConfig, name, panel=panel)


def _plan(name: str):
    """The models and plan options: [`PlanSettings`][fedrag.strategies.settings.PlanSettings]' field."""
    from fedrag.strategies.settings import PlanSettings

    return same(PlanSettings, name, panel=MODELS)


@dataclass
class FedTask:
    """A federated run: what every site trains and how the server aggregates.

    Each field is one setting (its help is `fedrag federate --help`'s); the training
    and model settings are those of [`TrainConfig`][fedrag.train.TrainConfig] and
    [`PlanSettings`][fedrag.strategies.settings.PlanSettings], declared with the same default
    and help. The task travels flat, as a Flower run config ([`to_config`][to_config])."""

    strategy: str = setting("", "a named strategy, or an import path 'module:attribute' (a Strategy or a factory)", cli=False)
    stage: str = setting("", "a single stage (instead of a strategy)", cli=False)
    retriever: str = _plan("retriever")
    generator: str = _plan("generator")
    lora: bool = _plan("lora")
    retriever_lora: bool | None = _plan("retriever_lora")
    index_refresh: IndexRefresh = _plan("index_refresh")
    top_k: int = _plan("top_k")
    ralt_mode: RaltMode = _plan("ralt_mode")
    two_phase_loss: TwoPhaseLoss = _plan("two_phase_loss")
    two_phase_order: TwoPhaseOrder = _plan("two_phase_order")
    rounds: int = setting(2, "federated rounds per phase", panel=TRAINING)
    local_steps: int = setting(10, "optimizer steps each site takes per round", panel=TRAINING)
    batch_size: BatchSize = _train("batch_size")
    lr_generator: float = _train("lr_generator")
    lr_retriever: float = _train("lr_retriever")
    warmup_ratio: float = _train("warmup_ratio")
    gradient_checkpointing: bool = _train("gradient_checkpointing")
    keep_optimizer: bool = setting(
        False, "sites keep their AdamW moments between rounds of a phase (default: they restart them each round)", panel=TRAINING
    )
    seed: int = _train("seed")
    aggregator: Aggregator = setting(
        "fedavg", "how the server combines the sites' updates (Flower's strategies)", panel=AGGREGATION
    )
    proximal_mu: float = setting(0.01, "FedProx: weight of the proximal term on the sites", panel=AGGREGATION)
    server_lr: float = setting(0.1, "FedAdam/FedYogi: the server's learning rate (eta)", panel=AGGREGATION)
    fraction: float = setting(1.0, "fraction of the connected sites sampled each round", panel=AGGREGATION)
    min_sites: int = setting(
        2,
        "sites a round needs",
        shown="every site fedrag federate starts; 2 under flwr run",
        panel=AGGREGATION,
    )
    dp_noise: float = setting(
        0.0,
        "central differential privacy when above 0: sites clip their update, the server adds Gaussian noise of this multiplier",
        panel=AGGREGATION,
    )
    dp_clip: float = setting(1.0, "DP: the L2 norm each site's update is clipped to", panel=AGGREGATION)
    dp_delta: float = setting(1e-5, "DP: the delta of the reported (epsilon, delta) guarantee", cli=False)
    local_dp_noise: float = setting(
        0.0,
        "local differential privacy when above 0: each site clips its update to --local-dp-clip and adds Gaussian "
        "noise of this multiplier before it leaves the site (a site's node config 'local-dp-noise' can demand more)",
        panel=AGGREGATION,
    )
    local_dp_clip: float = setting(
        1.0, "local DP: the L2 norm each site clips its update to before noising it", panel=AGGREGATION
    )
    secagg: bool = setting(
        False,
        "secure aggregation (Flower's SecAgg+): sites mask their updates so the server decodes only their sum",
        panel=AGGREGATION,
    )
    secagg_clip: float = setting(
        1.0,
        "secure aggregation: the bound on each value of a site's round update before quantisation "
        "(values beyond it are clipped and counted in rounds.json)",
        panel=AGGREGATION,
    )
    secagg_quantization: int = setting(
        2**22, "secure aggregation: the integer levels each value is quantised to (at most 2**32 / sites)", panel=AGGREGATION
    )
    secagg_threshold: int = setting(
        0,
        "secure aggregation: the sites whose key shares rebuild a dropped site's masks "
        "(0: a majority of the round's sites, at least 2); a round survives losing sites down to it",
        panel=AGGREGATION,
    )
    out: str = setting("", "the server's output directory", cli=False, identity=False)
    corpus: str = setting(
        "",
        "Flower's simulation under flwr run: the corpus JSONL (absolute path) each simulated node takes its partition of",
        cli=False,
    )
    train: str = setting(
        "", "Flower's simulation under flwr run: the training QA JSONL (absolute path), partitioned with the corpus", cli=False
    )
    partition: Partition = setting(
        "iid",
        "how the corpus and training questions are split across sites (iid: "
        "grouped by gold passage; by-title: whole titles per site)",
    )
    eval_corpus: str = setting("", "server-side evaluation: the corpus (default: --corpus)", cli=False)
    eval_qa: str = setting("", "held-out QA the server evaluates each round", cli=False)
    eval_limit: int = setting(
        VAL_LIMIT, "server-side evaluation: at most N questions of --val", flag="--val-limit", panel=EVALUATION, identity=False
    )
    evaluate_every: int = setting(
        1, "sites evaluate every N rounds and at a phase's last round (0: never)", panel=EVALUATION, identity=False
    )
    round_timeout: float = setting(
        3600.0,
        "seconds the server waits for a round's replies (and for --min-sites sites "
        "to be connected); fewer than --min-sites replies then end the run with an "
        "error, the last good round checkpointed",
        panel=AGGREGATION,
        identity=False,
    )
    device: str = setting(
        "cpu", "a site's device (a site's --node-config 'device=\"cuda:1\"' wins over this)", cli=False, identity=False
    )
    dtype: Precision = _train("dtype")
    score_batch_size: int | None = _train("score_batch_size")
    explicit: str = setting(
        "",
        "the training settings the user set, comma-separated (default: those passed when "
        "the task is built); a stage's own defaults never replace them",
        cli=False,
    )
    report_to: str = _train("report_to", EVALUATION)  # the server tracks each round's global and per-site metrics

    def __post_init__(self):
        from fedrag.errors import check_finite

        check_finite(self)  # before the range checks: nan passes both `< 0` and `> 0`
        if bool(self.strategy) == bool(self.stage):
            raise FedragError("a federated task needs exactly one of strategy or stage")
        check_choices(self)  # every choice, from its Literal type
        if self.rounds < 1 or self.local_steps < 1:
            raise FedragError("rounds and local steps must be >= 1")
        if not 0 < self.fraction <= 1:
            raise FedragError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.min_sites < 1 or self.top_k < 1:  # --batch-size: as TrainConfig checks it (below)
            raise FedragError("--min-sites and --top-k must be >= 1")
        if self.proximal_mu < 0 or self.server_lr <= 0 or self.eval_limit < 1:
            raise FedragError("--proximal-mu must be >= 0, --server-lr > 0 and --val-limit >= 1")
        if self.dp_noise < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise FedragError("--dp-noise must be >= 0, --dp-clip > 0 and the DP delta in (0, 1)")
        if self.local_dp_noise < 0 or self.local_dp_clip <= 0:
            raise FedragError("--local-dp-noise must be >= 0 and --local-dp-clip > 0")
        if self.secagg_clip <= 0 or not 2 <= self.secagg_quantization < 2**32 or self.secagg_threshold < 0:
            raise FedragError("--secagg-clip must be > 0, --secagg-quantization in [2, 2**32) and --secagg-threshold >= 0")
        if self.secagg and (self.min_sites < 2 or self.secagg_threshold == 1):
            raise FedragError("secure aggregation needs --min-sites >= 2 and a --secagg-threshold of 0 or >= 2")
        if self.secagg and self.batch_size == "auto":  # the masked sums' bound counts the examples a site trains on
            raise FedragError("secure aggregation needs a fixed --batch-size (it bounds the sites' example weights), not auto")
        if self.secagg and self.secagg_threshold > self.min_sites:
            raise FedragError(f"--secagg-threshold {self.secagg_threshold} exceeds --min-sites {self.min_sites}")
        from fedrag.train.tracking import parse_report_to

        parse_report_to(self.report_to)
        if self.round_timeout <= 0:
            raise FedragError("--round-timeout must be > 0")
        if self.evaluate_every < 0:
            raise FedragError("--evaluate-every must be >= 0 (0 turns client-side evaluation off)")
        self.train_config()  # the sites' training settings, validated as TrainConfig validates them

    @property
    def dp_enabled(self) -> bool:
        """Central DP is on: sites clip, the server noises (the one test every layer uses)."""
        return self.dp_noise > 0

    def train_config(self, rnd: int = 1, prox_mu: float = 0.0, phase=None, retriever_lora: bool = False):
        """The [`TrainConfig`][fedrag.train.TrainConfig] a site trains round `rnd` of a phase with, built
        once: `local_steps` steps, the schedule continuing across the phase's rounds, and `phase`'s
        settings as centrally ([`Phase.changes`][fedrag.strategies.base.Phase.changes])."""
        from fedrag.train.config import TrainConfig

        train, own = names(TrainConfig), ("explicit", "steps", "seed", "prox_mu", "schedule_total", "schedule_offset")
        carried = [n for n in names(type(self), to_sites=True) if n in train and n not in own]  # TrainConfig's, `same`
        values = {n: getattr(self, n) for n in carried}
        values.update(explicit=tuple(n for n in self.explicit.split(",") if n in train), steps=self.local_steps)
        values.update(seed=self.seed + rnd - 1, prox_mu=prox_mu, schedule_total=self.rounds * self.local_steps)
        values.update(schedule_offset=(rnd - 1) * self.local_steps)
        if phase is not None:
            values.update(phase.changes(TrainConfig, values["explicit"], True, retriever_lora))
        return TrainConfig(**values)

    def plan(self):
        """The Strategy this task federates: a named one, one imported from
        `strategy="module:attribute"` (a Strategy, or a callable returning one, called
        with `top_k`), or a one-phase one for a single stage."""
        from fedrag.strategies import plan_from_names

        if ":" in self.strategy:
            return import_strategy(self.strategy, self.top_k)
        return plan_from_names(
            self.strategy or None, self.stage or None, self.top_k, self.ralt_mode, self.two_phase_loss, self.two_phase_order
        )

    def to_config(self) -> dict:
        """The flat run config; an unset optional setting (None) is left out: a site reads its default."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_config(cls, config) -> "FedTask":
        """The task from a Flower run config (`-` or `_` in keys). Audited: a key that
        is no task setting, or a value of the wrong type (text where a number belongs),
        is refused rather than ignored, so a run config carries nothing else to a site."""
        kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool, int), "int|str": (int, str)}
        hints = typing.get_type_hints(cls)  # a Literal setting travels as text and is checked against its choices
        names = {f.name: _kind(hints[f.name]) for f in fields(cls)}
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


def _kind(hint) -> str:
    """How a setting travels in a run config: a `Literal` as text, `X | None` as `X`."""
    if get_origin(hint) is Literal:
        return "str"
    if any(get_origin(a) is Literal for a in get_args(hint)):  # a number or a name (batch_size: 16 or auto)
        return "int|str"
    args = [a for a in get_args(hint) if a is not type(None)]
    return (args[0] if args else hint).__name__


def _record_explicit():
    from fedrag.train.config import record_explicit

    record_explicit(FedTask, join=True)


_record_explicit()
