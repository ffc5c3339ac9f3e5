"""The parts a federated task is composed of: what is trained (models and plan), how the
sites train, how the server aggregates, what privacy the run keeps, and where the run
reads, writes, evaluates and reports.

Each part is a frozen dataclass whose fields are settings (`fedrag._settings.setting`):
a setting another class owns (the sites' training settings are
[`TrainConfig`][fedrag.train.TrainConfig]'s) is carried with `fedrag._settings.same`,
so its default, help and roles are written once. Each part checks its own values; what
ties two parts together is checked by [`FedTask`][fedrag.federation.task.FedTask].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from fedrag._settings import check_choices, same, setting
from fedrag.data.partition import Partition
from fedrag.errors import FedragError, check_finite
from fedrag.retrieve.choices import IndexRefresh
from fedrag.strategies.choices import TwoPhaseLoss, TwoPhaseOrder
from fedrag.train.choices import RaltMode
from fedrag.train.config import VAL_LIMIT, BatchSize, Precision

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


def _checked(part) -> None:
    check_finite(part)  # before the range checks: nan passes both `< 0` and `> 0`
    check_choices(part)  # every choice, from its Literal type


@dataclass(frozen=True)
class Models:
    """What the sites train: the models and the plan (a strategy or one stage)."""

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

    def __post_init__(self):
        _checked(self)
        if self.top_k < 1:
            raise FedragError("--top-k must be >= 1")

    def plan(self):
        """The Strategy the sites train: a named one, one imported from
        `strategy="module:attribute"` (a Strategy, or a callable returning one, called
        with `top_k`), or a one-phase one for a single stage."""
        from fedrag.strategies import plan_from_names

        return plan_from_names(
            self.strategy or None, self.stage or None, self.top_k, self.ralt_mode, self.two_phase_loss, self.two_phase_order
        )


@dataclass(frozen=True)
class SiteTraining:
    """How each site trains a round: the rounds of a phase, the steps of a round, and the
    training settings of [`TrainConfig`][fedrag.train.TrainConfig] the sites take."""

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
    dtype: Precision = _train("dtype")
    score_batch_size: int | None = _train("score_batch_size")
    explicit: str = setting(
        "",
        "the training settings the user set, comma-separated (default: those passed when "
        "the task is built); a stage's own defaults never replace them",
        cli=False,
    )

    def __post_init__(self):
        _checked(self)
        if self.rounds < 1 or self.local_steps < 1:
            raise FedragError("rounds and local steps must be >= 1")


@dataclass(frozen=True)
class Aggregation:
    """How the server samples the sites, waits for them and combines their updates."""

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
    round_timeout: float = setting(
        3600.0,
        "seconds the server waits for a round's replies (and for --min-sites sites "
        "to be connected); fewer than --min-sites replies then end the run with an "
        "error, the last good round checkpointed",
        panel=AGGREGATION,
        identity=False,
    )

    def __post_init__(self):
        _checked(self)
        if not 0 < self.fraction <= 1:
            raise FedragError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.min_sites < 1 or self.proximal_mu < 0 or self.server_lr <= 0:
            raise FedragError("--min-sites must be >= 1, --proximal-mu >= 0 and --server-lr > 0")
        if self.round_timeout <= 0:
            raise FedragError("--round-timeout must be > 0")


@dataclass(frozen=True)
class Privacy:
    """The run's privacy: central DP (the server noises), local DP (each site noises) and
    secure aggregation (the server decodes only the sites' sum)."""

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

    def __post_init__(self):
        _checked(self)
        if self.dp_noise < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise FedragError("--dp-noise must be >= 0, --dp-clip > 0 and the DP delta in (0, 1)")
        if self.local_dp_noise < 0 or self.local_dp_clip <= 0:
            raise FedragError("--local-dp-noise must be >= 0 and --local-dp-clip > 0")
        if self.secagg_clip <= 0 or not 2 <= self.secagg_quantization < 2**32 or self.secagg_threshold < 0:
            raise FedragError("--secagg-clip must be > 0, --secagg-quantization in [2, 2**32) and --secagg-threshold >= 0")
        if self.secagg and self.secagg_threshold == 1:
            raise FedragError("secure aggregation needs a --secagg-threshold of 0 or >= 2")

    @property
    def dp_enabled(self) -> bool:
        """Central DP is on: sites clip, the server noises (the one test every layer uses)."""
        return self.dp_noise > 0


@dataclass(frozen=True)
class RunSettings:
    """Where the run reads and writes, how the data is split, and what is evaluated and reported."""

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
    device: str = setting(
        "cpu", "a site's device (a site's --node-config 'device=\"cuda:1\"' wins over this)", cli=False, identity=False
    )
    report_to: str = _train("report_to", EVALUATION)  # the server tracks each round's global and per-site metrics

    def __post_init__(self):
        _checked(self)
        if self.eval_limit < 1:
            raise FedragError("--val-limit must be >= 1")
        if self.evaluate_every < 0:
            raise FedragError("--evaluate-every must be >= 0 (0 turns client-side evaluation off)")
        from fedrag.train.tracking import parse_report_to

        parse_report_to(self.report_to)
