"""The message audit: every message through the run's Grid, both directions, is checked
against an allow-list, and what went out and came back is recorded per round.

Allowed out (train / evaluate): one ArrayRecord `arrays` holding exactly the phase's
trainable tensors, packed (one flat array per dtype, [`fedrag.federation.wire.tensors`][fedrag.federation.wire.tensors];
sizes and dtypes must match the phase's layout, which both ends derive); one
ConfigRecord `config` with known keys and numeric values (`context`, the frozen
tensors of earlier phases, is the one bytes value). Allowed back: the same tensors
(train replies only) and one MetricRecord `metrics` whose keys come from a fixed set. A violating reply is
rejected (the strategy sees a failed reply) and counted; a violating outgoing message
is a server-side bug and stops the run.

What an allow-list cannot see: numbers chosen to encode data inside a correctly named,
shaped and typed tensor (or metric value). Differential privacy (`--dp-noise`) is
the defence for the model updates; site metrics are not noised (docs/federation.md).
"""

from __future__ import annotations

from fedrag.errors import FedragError
from fedrag.federation.wire.messages import BYTES_KEYS, CONFIG_KEYS, METRIC_KEYS, TEXT_KEYS  # noqa: F401 - the protocol's, checked here
from fedrag.federation.wire.tensors import packed_spec, record_bytes

RESUME_HINT = "the checkpoint of the last good round is kept in OUT/checkpoint; run the same command again to resume"


def _arrays_violation(record, spec: dict) -> str | None:
    if set(record) != set(spec):
        extra, missing = sorted(set(record) - set(spec)), sorted(set(spec) - set(record))
        return f"arrays differ from the phase's packed trainable set (extra {extra[:3]}, missing {missing[:3]})"
    for name, array in record.items():
        if (tuple(array.shape), array.dtype) != spec[name]:
            return f"array '{name}' is {array.dtype}{tuple(array.shape)}, expected {spec[name][1]}{spec[name][0]}"
    return None


def outgoing_violation(message, spec: dict) -> str | None:
    content = message.content
    if set(content.array_records) - {"arrays"} or content.metric_records or set(content.config_records) - {"config"}:
        return f"unexpected records {sorted(content.keys())}"
    if "arrays" in content.array_records:
        bad = _arrays_violation(content.array_records["arrays"], spec)
        if bad:
            return bad
    for key, value in content.config_records.get("config", {}).items():
        if key not in CONFIG_KEYS:
            return f"config key '{key}' is not in the allow-list"
        if isinstance(value, (bytes, bytearray)) != (key in BYTES_KEYS) or isinstance(value, str) != (key in TEXT_KEYS):
            return f"config key '{key}' carries a {type(value).__name__}"
    return None


def reply_violation(reply, spec: dict, message_type: str) -> str | None:
    content = reply.content
    allowed_arrays = {"arrays"} if message_type == "train" else set()
    if set(content.array_records) - allowed_arrays or content.config_records or set(content.metric_records) - {"metrics"}:
        return f"unexpected records {sorted(content.keys())}"
    if message_type == "train":
        if "arrays" not in content.array_records:
            return "a train reply without its tensors"
        bad = _arrays_violation(content.array_records["arrays"], spec)
        if bad:
            return bad
    unknown = sorted(set(content.metric_records.get("metrics", {})) - METRIC_KEYS)
    return f"metric keys not in the allow-list: {unknown[:3]}" if unknown else None


class AuditedGrid:
    """Wraps the run's Grid: enforces the allow-lists above on `send_and_receive` and
    records per training round bytes each way, replies, failures, rejections and what
    the accepted replies held, pulling replies every `poll` seconds. `exchange` (e.g.
    [`SecureAggregation`][fedrag.federation.privacy.secagg.SecureAggregation]) replaces a training
    round's plain push and pull: `exchange(push_pull, messages, timeout, packed_spec)` returns
    the replies the strategy sees and the audit figures to record instead. `get_node_ids`
    gives up (raises) when fewer than `min_nodes` sites stay connected for `wait` seconds: Flower's stock strategies
    would otherwise wait for them forever. `halt()` runs at every wait for sites or replies
    and raises when the launcher has stopped the run. Everything else is the wrapped Grid's
    own behaviour."""

    def __init__(
        self,
        grid,
        audit: list,
        layout: dict,
        min_nodes: int = 0,
        wait: float = float("inf"),
        poll: float = 0.2,
        exchange=None,
        halt=lambda: None,
    ):
        self._grid, self.audit, self.poll, self.exchange, self.halt = grid, audit, poll, exchange, halt
        self.layout, self.spec = layout, packed_spec(layout)  # the phase's tensors; what their packed arrays must be
        self.min_nodes, self.wait, self._short_since = min_nodes, wait, None

    def send_and_receive(self, messages, *args, **kwargs):
        messages = list(messages)
        for m in messages:
            bad = outgoing_violation(m, self.spec)
            if bad:
                raise FedragError(f"audit: refusing to send a {m.metadata.message_type} message: {bad}")
        timeout = kwargs.get("timeout", args[0] if args else None)
        kind = messages[0].metadata.message_type if messages else ""
        overrides: dict = {}
        if kind == "train" and self.exchange is not None and messages:  # e.g. secure aggregation's protocol
            replies, overrides = self.exchange(self._exchange, messages, timeout, self.spec)
        else:
            replies = self._exchange(messages, timeout)
        accepted, rejected = [], []
        for r in replies:
            bad = None if r.has_error() else reply_violation(r, self.spec, kind)
            (rejected if bad else accepted).append((r, bad))
        if kind == "train":
            ok = [r for r, _ in accepted if not r.has_error()]
            self.audit.append(
                {
                    "sites": len(messages),
                    "bytes_sent": sum(record_bytes(r) for m in messages for r in m.content.array_records.values()),
                    "context_bytes_sent": sum(
                        len(v)
                        for m in messages
                        for r in m.content.config_records.values()
                        for v in r.values()
                        if isinstance(v, bytes)
                    ),
                    "replies": len(ok),
                    "failures": len(replies) - len(ok) - len(rejected),
                    "rejected": len(rejected),
                    "rejected_reasons": sorted({bad for _, bad in rejected}),
                    "failure_reasons": sorted({failure_reason(r) for r, _ in accepted if r.has_error()}),
                    "bytes_received": sum(record_bytes(r) for m in ok for r in m.content.array_records.values()),
                    # the tensors the accepted replies' packed arrays were checked against and unpack to
                    "array_names": sorted(self.layout) if any(m.content.array_records for m in ok) else [],
                    "metric_keys": sorted({k for m in ok for r in m.content.metric_records.values() for k in r}),
                }
            )
            for key, value in overrides.items():  # what the exchange saw travel, in place of the replies' own figures
                entry = self.audit[-1]
                entry[key] = sorted(set(entry.get(key, [])) | set(value)) if isinstance(value, list) else value
        return [r for r, _ in accepted]

    def _exchange(self, messages, timeout: float | None) -> list:
        """Push `messages` and pull their replies every `poll` seconds until all are in
        or `timeout` passes: Flower's own send_and_receive against a SuperLink sleeps a
        fixed 3 s between pulls, which a deployment round paid at least once."""
        import time

        pending = set(self._grid.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        replies: list = []
        while pending:
            self.halt()
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or time.monotonic() >= end:
                break
            time.sleep(self.poll)
        return replies

    def get_node_ids(self):
        import time

        self.halt()
        ids = list(self._grid.get_node_ids())
        if len(ids) >= self.min_nodes:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = time.monotonic()
        elif time.monotonic() - self._short_since > self.wait:
            raise FedragError(
                f"only {len(ids)} of {self.min_nodes} required sites were connected for {self.wait:.0f}s; {RESUME_HINT}"
            )
        return ids

    def get_nodes(self):
        return self._grid.get_nodes()

    def create_message(self, *args, **kwargs):
        return self._grid.create_message(*args, **kwargs)

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    @property
    def run(self):
        return self._grid.run


def failure_reason(message) -> str:
    """The last `...Error: text` of a failed reply's reason (Flower embeds the site's traceback)."""
    import re

    text = str(message.error.reason or "")
    found = re.findall(r"(?:FedragError|Error|Exception): ([^\n<>'\\]+)", text)
    return (found[-1] if found else text.strip().splitlines()[-1] if text.strip() else "unknown")[:300]
