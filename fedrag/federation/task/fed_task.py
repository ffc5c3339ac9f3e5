"""The federated task: the five parts a ServerApp and ClientApp need, and their flat form.

One [`FedTask`][FedTask] describes the run: what is trained ([`Models`][fedrag.federation.task.parts.Models]),
how the sites train ([`SiteTraining`][fedrag.federation.task.parts.SiteTraining]), how the server
aggregates ([`Aggregation`][fedrag.federation.task.parts.Aggregation]), the run's
[`Privacy`][fedrag.federation.task.parts.Privacy], and where it reads, writes and reports
([`RunSettings`][fedrag.federation.task.parts.RunSettings]). It is frozen and hashable, and
round-trips through a flat `{str: scalar}` dict ([`to_config`][FedTask.to_config],
[`from_config`][FedTask.from_config]), so the same task travels as a Flower `run_config`
(deployment: `[tool.flwr.app.config]` / `--run-config`) or is captured by the apps' closures
(simulation from Python).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, get_args, get_origin

from fedrag._settings import compose, flatten, hint, names, part, settings_of
from fedrag.errors import FedragError
from fedrag.federation.task.parts import Aggregation, Models, Privacy, RunSettings, SiteTraining


@dataclass(frozen=True, init=False)
class FedTask:
    """A federated run: what every site trains and how the server aggregates.

    Built from its parts (`FedTask(models=Models(...), training=SiteTraining(...))`) or from
    settings by name (`FedTask(strategy="ra-dit", rounds=3)`: each goes to the part that
    declares it); a part not given takes its defaults. Each setting's help is
    `fedrag federate --help`'s."""

    models: Models = part(Models, "what the sites train: the models and the plan")
    training: SiteTraining = part(SiteTraining, "how each site trains a round")
    aggregation: Aggregation = part(Aggregation, "how the server samples, waits for and combines the sites")
    privacy: Privacy = part(Privacy, "central DP, local DP and secure aggregation")
    run: RunSettings = part(RunSettings, "where the run reads, writes, evaluates and reports")

    def __init__(self, **given: Any):
        if "explicit" not in given:  # the settings the caller set: a stage's own defaults never replace them
            given["explicit"] = ",".join(_explicit(type(self), given))
        for name, value in compose(type(self), given).items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self):
        """What ties two parts together (each part checks its own values)."""
        if bool(self.models.strategy) == bool(self.models.stage):
            raise FedragError("a federated task needs exactly one of strategy or stage")
        privacy, sites, aggregator = self.privacy, self.aggregation.min_sites, self.aggregation.aggregator
        if privacy.dp_enabled and aggregator not in ("fedavg", "fedprox"):  # before any site starts, not at round 1
            raise FedragError(
                f"central DP (--dp-noise) needs --aggregator fedavg or fedprox, not {aggregator}: "
                "Flower's accounted DP averages the clipped updates as FedAvg does"
            )
        if privacy.secagg and sites < 2:
            raise FedragError("secure aggregation needs --min-sites >= 2")
        if privacy.secagg and self.training.batch_size == "auto":  # the masked sums' bound counts a site's examples
            raise FedragError("secure aggregation needs a fixed --batch-size (it bounds the sites' example weights), not auto")
        if privacy.secagg and privacy.secagg_threshold > sites:
            raise FedragError(f"--secagg-threshold {privacy.secagg_threshold} exceeds --min-sites {sites}")
        self.train_config()  # the sites' training settings, validated as TrainConfig validates them

    @property
    def dp_enabled(self) -> bool:
        """Central DP is on: sites clip, the server noises (the one test every layer uses)."""
        return self.privacy.dp_enabled

    def train_config(self, rnd: int = 1, phase=None, retriever_lora: bool = False):
        """The [`TrainConfig`][fedrag.train.TrainConfig] a site trains round `rnd` of a phase with, built
        once: `local_steps` steps, the round's seed, and `phase`'s settings as centrally
        ([`Phase.changes`][fedrag.strategies.base.Phase.changes]). Where the round sits in the
        phase's schedule is [`round_window`][FedTask.round_window]'s."""
        from fedrag.train.config import TrainConfig

        training, train, own = self.training, names(TrainConfig), ("explicit", "steps", "seed")
        carried = [n for n in names(type(training), to_sites=True) if n in train and n not in own]  # TrainConfig's, `same`
        values = {n: getattr(training, n) for n in carried}
        values.update(explicit=tuple(n for n in training.explicit.split(",") if n in train), steps=training.local_steps)
        values.update(seed=training.seed + rnd - 1)
        if phase is not None:
            values.update(phase.changes(TrainConfig, values["explicit"], True, retriever_lora))
        return TrainConfig(**values)

    def round_window(self, rnd: int):
        """Round `rnd`'s place in its phase's learning-rate schedule: the phase's rounds × local
        steps in all, starting after the earlier rounds' steps."""
        from fedrag.train.optimizer import RoundWindow

        steps = self.training.local_steps
        return RoundWindow(total=self.training.rounds * steps, offset=(rnd - 1) * steps)

    def plan(self):
        """The Strategy this task federates ([`Models.plan`][fedrag.federation.task.parts.Models.plan])."""
        return self.models.plan()

    def to_config(self) -> dict:
        """The flat run config; an unset optional setting (None) is left out: a site reads its default."""
        return {k: v for k, v in flatten(self).items() if v is not None}

    @classmethod
    def from_config(cls, config) -> "FedTask":
        """The task from a Flower run config (`-` or `_` in keys). Audited: a key that
        is no task setting, or a value of the wrong type (text where a number belongs),
        is refused rather than ignored, so a run config carries nothing else to a site."""
        kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool, int), "int|str": (int, str)}
        known = {name: _kind(hint(cls, name)) for name in settings_of(cls)}  # a Literal travels as text
        kw = {}
        for key, value in dict(config).items():
            name = key.replace("-", "_")
            if name not in known:
                raise FedragError(f"run config: '{key}' is not a fedrag task setting")
            ok = kinds.get(known[name], (object,))
            if not isinstance(value, ok) or (known[name] in ("int", "float") and isinstance(value, bool)):
                raise FedragError(f"run config: '{key}' must be {known[name]}, got {type(value).__name__}")
            kw[name] = bool(value) if known[name] == "bool" else value
        if "explicit" not in kw:  # a run config without the key: the settings that differ from the default were set
            defaults = {n: f.default for n, (f, _) in settings_of(cls).items()}
            kw["explicit"] = ",".join(k for k, v in kw.items() if v != defaults.get(k))
        return cls(**kw)


def _flat_reads(cls: type) -> None:
    """`task.rounds` for `task.training.rounds`, deprecated: fedrag 0.1.0's FedTask was flat.
    One property per setting, each naming the part it reads (no attribute forwarding)."""
    import warnings

    def read(part: str, name: str):
        def get(self):
            warnings.warn(f"FedTask.{name} is deprecated; use FedTask.{part}.{name}", DeprecationWarning, stacklevel=2)
            return getattr(getattr(self, part), name)

        return property(get, doc=f"Deprecated: [`{part}.{name}`][fedrag.federation.task.parts].")

    for f in fields(cls):
        for name in settings_of(f.metadata["part"]):
            setattr(cls, name, read(f.name, name))


_flat_reads(FedTask)


def _explicit(cls: type, given: dict) -> list[str]:
    """The settings a caller of `cls(**given)` set: those given by name, and those of a part
    given whole that differ from the part's default (or that the part itself records)."""
    found = [n for n in given if n in settings_of(cls)]
    for f in fields(cls):
        whole = given.get(f.name)
        if whole is None or not f.metadata.get("part"):
            continue
        default = f.metadata["part"]()
        found += [n for n, v in flatten(whole).items() if v != getattr(default, n) and n != "explicit"]
        found += [n for n in getattr(whole, "explicit", "").split(",") if n]
    return list(dict.fromkeys(found))


def _kind(hint) -> str:
    """How a setting travels in a run config: a `Literal` as text, `X | None` as `X`."""
    if get_origin(hint) is Literal:
        return "str"
    if any(get_origin(a) is Literal for a in get_args(hint)):  # a number or a name (batch_size: 16 or auto)
        return "int|str"
    args = [a for a in get_args(hint) if a is not type(None)]
    return (args[0] if args else hint).__name__
