"""The round protocol: what the server asks a site, and what a site reports, typed.

A round's message carries three records: `arrays` (the phase's tensors, packed by
`fedrag.federation.wire.tensors`), `config` (a [`RoundInstruction`][RoundInstruction]) and,
in a reply, `metrics` (a [`TrainReport`][TrainReport] or an
[`EvaluateReport`][EvaluateReport]). Each class encodes itself to the Flower record its
message holds and decodes from it, so the key names live here only; the audit's
allow-lists are derived from these fields.

Some instruction fields are Flower's own: its strategies set `server-round`, FedProx
`proximal-mu`, and the central-DP wrapper `clipping_norm` (Flower's clipping mod on the
site reads it); the server sets the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

CONFIG, ARRAYS, METRICS = "config", "arrays", "metrics"  # the records of a round's message


def _key(f) -> str:
    """A field's key in its record: its own `key`, else the name with dashes (Flower's style)."""
    return f.metadata.get("key", f.name.replace("_", "-"))


def _encode(obj) -> dict:
    """`obj`'s set fields (None: not set, left out) as `{record key: value}`, in field order."""
    return {_key(f): getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) is not None}


def _decode(cls, record: Mapping[str, Any], what: str, ignore: frozenset = frozenset()):
    """`cls` from a record's `{key: value}`; a key `cls` does not declare is refused."""
    by_key = {_key(f): f for f in fields(cls)}
    unknown = sorted(set(record) - set(by_key) - ignore)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown[:3]}")
    kw = {}
    for key, f in by_key.items():
        if key in record:
            value = record[key]
            kw[f.name] = f.metadata["cast"](value) if "cast" in f.metadata and value is not None else value
    return cls(**kw)


@dataclass(frozen=True)
class RoundInstruction:
    """What the server asks a site this round (the message's `config` record).

    `round` is the round of the phase: Flower numbers a `start()`'s rounds from 1, and a
    resumed phase starts a new `start()` after `round_offset` rounds already done."""

    phase: int = field(metadata={"cast": int})
    round_offset: int = field(default=0, metadata={"cast": int})
    context: bytes | None = field(default=None, metadata={"cast": bytes})  # earlier phases' frozen tensors (safetensors)
    server_round: int | None = field(default=None, metadata={"cast": int})  # Flower's strategies set it
    proximal_mu: float | None = field(default=None, metadata={"cast": float})  # Flower's FedProx sets it
    clipping_norm: float | None = field(default=None, metadata={"key": "clipping_norm", "cast": float})  # central DP
    fedrag_version: str | None = field(default=None, metadata={"cast": str})  # the server's; a site checks it

    @property
    def round(self) -> int:
        """The round of the phase this message is for (1-based)."""
        if self.server_round is None:  # Flower's strategies number every round they configure
            raise ValueError("a round's config lacks 'server-round'")
        return self.round_offset + self.server_round

    @property
    def mu(self) -> float:
        """FedProx's proximal weight (0: plain local training)."""
        return self.proximal_mu or 0.0

    def to_record(self):
        """The Flower ConfigRecord a message carries."""
        from flwr.app import ConfigRecord

        return ConfigRecord(_encode(self))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "RoundInstruction":
        """The instruction from a message's `config` record (or any mapping of its keys)."""
        return _decode(cls, record, "a round's config")

    @classmethod
    def of(cls, config: "RoundInstruction | Mapping[str, Any]") -> "RoundInstruction":
        """`config` as an instruction: itself, or decoded from its record."""
        return config if isinstance(config, cls) else cls.from_record(config)


@dataclass(frozen=True)
class TrainReport:
    """What a site reports after training a round (the reply's `metrics` record; its
    tensors travel beside it in `arrays`). A field left None is not reported."""

    num_examples: int
    train_loss: float | None = None
    client_wall_s: float | None = None
    flops: float | None = None
    generator_tokens: int | None = None
    retriever_tokens: int | None = None
    bytes_received: int | None = None
    threads: int | None = None
    load_s: float | None = None  # imports, models, store and the round's tensors
    model_loads: int | None = None  # RAG systems the site's process has built so far (a resident worker: 1)
    process_rounds: int | None = None  # rounds the site's process has trained, this one included
    batch_size: int | None = None  # the task's, or what --batch-size auto found on this site
    bytes_sent: int | None = None
    dispatch_s: float | None = None  # the message's arrival (the ClientApp's)
    startup_s: float | None = None
    prepare_s: float | None = None
    local_dp_epsilon: float | None = None  # the site's local-DP ledger
    local_dp_releases: float | None = None
    secagg_clipped: int | None = None  # values the SecAgg+ quantiser clipped

    def to_record(self):
        """The Flower MetricRecord a reply carries."""
        from flwr.app import MetricRecord

        return MetricRecord(_encode(self))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "TrainReport":
        return _decode(cls, record, "a site's train report")


@dataclass(frozen=True)
class EvaluateReport:
    """What a site reports after evaluating the global model on its own examples."""

    num_examples: int
    eval_loss: float
    phase: int
    recall_at_5: float | None = field(default=None, metadata={"key": "recall@5"})  # when its examples have gold ids

    def to_record(self):
        from flwr.app import MetricRecord

        return MetricRecord(_encode(self))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "EvaluateReport":
        return _decode(cls, record, "a site's evaluate report")


def keys(cls) -> set[str]:
    """Every record key `cls` (an instruction or a report) may carry."""
    return {_key(f) for f in fields(cls)}


CONFIG_KEYS = keys(RoundInstruction)  # what a message's config may hold (the audit's allow-list)
BYTES_KEYS = {"context"}  # the one bytes value of a config
VERSION_KEY = "fedrag-version"  # RoundInstruction.fedrag_version's key: fedrag.federation.site.policy checks it
TEXT_KEYS = {VERSION_KEY}  # the one text value of a config
METRIC_KEYS = keys(TrainReport) | keys(EvaluateReport)  # what a reply's metrics may hold
