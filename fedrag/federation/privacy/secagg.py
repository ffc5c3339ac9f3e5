"""Secure aggregation: Flower's SecAgg+ protocol under fedrag's Message-API strategies.

With `secagg` on, a training round's exchange runs Flower's own `SecAggPlusWorkflow`
(set-up, key sharing, masked vectors, unmasking) on the run's Grid, and each site runs
Flower's unchanged `secaggplus_mod`. What a site sends is its round update Δ (the tensors
it trained minus the global ones it received), weighted by its example count (every site
equally under central DP, whose noise assumes it), quantised and masked with pairwise and
private masks; the server decodes only the weighted sum of the sites' updates. The
aggregator (FedAvg, FedAdam, ..., wrapped in central DP or not) then sees every site's
reply carry the same tensors, the global ones plus the weighted mean update, so its
weighted average is that aggregate: it never sees one site's update.

The bridge: the workflow runs under a `LegacyContext` with a legacy strategy. `_Bridge`
is that strategy (it hands the workflow the sites the Message-API strategy sampled and
takes back the decoded aggregate), and `_Channel` is the Grid it talks to (it puts the
round's real train content into the masked-vector stage and checks every protocol
reply against an allow-list). No cryptography is written here.
"""

from __future__ import annotations

import numpy as np

from fedrag.errors import FedragError
from fedrag.federation.wire.messages import CONFIG, METRIC_KEYS, RoundInstruction
from fedrag.federation.wire.tensors import from_record, to_record

MODULUS = 2**32  # Flower's default mask modulus: n sites' quantised sums stay below it for n < MODULUS / quantisation
_REPLY_KEYS = {  # what a site may answer at each stage of the protocol (Flower's secaggplus_mod)
    "setup": {"pk1", "pk2"},
    "share_keys": {"dsts", "ctxts"},
    "collect_masked_vectors": {"masked_params"},
    "unmask": {"nids", "shares"},
}
_FITRES = {"fitres.metrics", "fitres.status"}  # the masked-vector reply's legacy records (its arrays emptied)


def threshold(task, sites: int) -> int:
    """Shares needed to rebuild a dropped site's masks: the task's `secagg_threshold`, else
    a majority of the round's sites (at least 2)."""
    return task.privacy.secagg_threshold or max(2, sites // 2 + 1)


class _Proxy:
    def __init__(self, node_id: int):
        self.node_id = node_id


def _bridge_class():
    from flwr.common import FitIns, Parameters
    from flwr.server.strategy import Strategy as LegacyStrategy

    class _Bridge(LegacyStrategy):
        """The legacy strategy the workflow drives: the sites are those the round's
        Message-API strategy sampled; the aggregate is what the workflow decodes."""

        def __init__(self, nodes):
            self.nodes, self.results, self.aggregate = list(nodes), [], None

        def initialize_parameters(self, client_manager):
            return None

        def configure_fit(self, server_round, parameters, client_manager):
            # the content the sites receive is the round's own message (see _Channel)
            return [(_Proxy(n), FitIns(Parameters(tensors=[], tensor_type=""), {})) for n in self.nodes]

        def aggregate_fit(self, server_round, results, failures):
            self.results = list(results)
            self.aggregate = results[0][1].parameters if results else None
            return self.aggregate, {}

        def configure_evaluate(self, server_round, parameters, client_manager):
            return []

        def aggregate_evaluate(self, server_round, results, failures):
            return None, {}

        def evaluate(self, server_round, parameters):
            return None

    return _Bridge


def _bytes(record) -> int:
    return sum(
        len(v) if isinstance(v, bytes) else sum(len(b) for b in v if isinstance(b, bytes)) if isinstance(v, list) else 0
        for v in record.values()
    )


class _Channel:
    """The Grid the workflow talks to: the round's push/pull, with the train content put
    into the masked-vector stage, each reply checked, and what travelled counted."""

    def __init__(self, push_pull, originals: dict, spec: dict):
        self.push_pull, self.originals, self.spec = push_pull, originals, spec
        self.masked: dict[int, object] = {}  # node -> its masked-vector reply
        self.failed: dict[int, object] = {}  # node -> its first failed reply
        self.rejected: dict[int, str] = {}  # node -> why the audit refused its reply
        self.masked_bytes = self.protocol_bytes = 0

    def send_and_receive(self, messages, timeout=None):
        from flwr.app import RecordDict
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        messages = list(messages)
        stage = ""
        for m in messages:
            cfg = m.content.config_records[RECORD_KEY_CONFIGS]
            stage = str(cfg["stage"])
            self.protocol_bytes += _bytes(cfg)
            if stage == "collect_masked_vectors":  # the site trains on the round's real message
                own = self.originals[m.metadata.dst_node_id].content
                m.content = RecordDict({"arrays": own["arrays"], "config": own["config"], RECORD_KEY_CONFIGS: cfg})
        replies = []
        for r in self.push_pull(messages, timeout):
            node = r.metadata.src_node_id
            bad = None if r.has_error() else self._violation(r, stage)
            if bad:  # dropped: to the protocol the site did not answer
                self.rejected.setdefault(node, bad)
                continue
            if r.has_error():
                self.failed.setdefault(node, r)
            else:
                cfg = r.content.config_records[RECORD_KEY_CONFIGS]
                if stage == "collect_masked_vectors":
                    self.masked[node] = r
                    self.masked_bytes += _bytes(cfg)
                else:
                    self.protocol_bytes += _bytes(cfg)
            replies.append(r)
        return replies

    def _violation(self, reply, stage: str) -> str | None:
        from flwr.common import bytes_to_ndarray
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        content = reply.content
        extra = _FITRES if stage == "collect_masked_vectors" else set()
        if set(content.config_records) - {RECORD_KEY_CONFIGS} - extra or RECORD_KEY_CONFIGS not in content.config_records:
            return f"unexpected records {sorted(content.keys())}"
        if any(len(a) for a in content.array_records.values()) or set(content.metric_records) - {"fitres.num_examples"}:
            return "a secure-aggregation reply with tensors or metrics outside the protocol"
        keys = set(content.config_records[RECORD_KEY_CONFIGS])
        if keys != _REPLY_KEYS.get(stage, set()):
            return f"secure-aggregation keys {sorted(keys)} at stage {stage}"
        if stage == "collect_masked_vectors":
            masked = [bytes_to_ndarray(b) for b in content.config_records[RECORD_KEY_CONFIGS]["masked_params"]]
            sizes = [a.size for a in masked]
            if sizes != [1] + [int(np.prod(shape)) for shape, _ in (self.spec[k] for k in sorted(self.spec))]:
                return f"masked vectors of sizes {sizes[:4]} do not fit the phase's tensors"
            unknown = sorted(set(content.config_records["fitres.metrics"]) - METRIC_KEYS)
            if unknown:
                return f"metric keys not in the allow-list: {unknown[:3]}"
        return None


class SecureAggregation:
    """A round's train exchange under SecAgg+ (the audited Grid's `exchange`).

    The strategy's train messages go in; out come one reply per site (the decoded aggregate
    with the site's own metrics, or the site's failure) and what the audit records instead
    of a clear exchange's figures. `max_weight` bounds a site's `num-examples` in a round
    (the protocol scales each update by weight / max_weight before quantising it)."""

    def __init__(self, task, max_weight: float):
        self.task, self.max_weight = task, float(max_weight)

    def __call__(self, push_pull, messages, timeout, spec: dict):
        from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
        from flwr.common import parameters_to_ndarrays
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow import SecAggPlusWorkflow
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
        from flwr.server.workflow.constant import Key as WorkflowKey
        import torch

        originals = {m.metadata.dst_node_id: m for m in messages}
        server_round = int(messages[0].content["config"]["server-round"])
        need = threshold(self.task, len(originals))
        if len(originals) < 2 or need > len(originals):
            raise FedragError(
                f"secure aggregation needs at least 2 sites and no more than the {len(originals)} sampled "
                f"for its threshold ({need}); see --min-sites and --secagg-threshold"
            )
        bridge = _bridge_class()(sorted(originals))
        context = LegacyContext(Context(0, 0, {}, RecordDict(), {}), strategy=bridge)
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
        context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
        channel = _Channel(push_pull, originals, spec)
        SecAggPlusWorkflow(
            num_shares=1.0,  # every sampled site holds a share of every other's keys
            reconstruction_threshold=need,
            max_weight=self.max_weight,
            clipping_range=self.task.privacy.secagg_clip,
            quantization_range=self.task.privacy.secagg_quantization,
            modulus_range=MODULUS,
            timeout=timeout,
        )(channel, context)
        replies = list(channel.failed.values())
        info = {
            "sites": len(originals),
            "threshold": need,
            "dropped": len(originals) - len(bridge.results),
            "clip": self.task.privacy.secagg_clip,
            "quantization": self.task.privacy.secagg_quantization,
        }
        reasons = []
        if bridge.aggregate is not None:
            global_ = from_record(next(iter(originals.values())).content["arrays"])
            mean = parameters_to_ndarrays(bridge.aggregate)
            agg = {k: global_[k] + torch.from_numpy(np.asarray(d)).to(global_[k].dtype) for k, d in zip(sorted(global_), mean)}
            for proxy, fitres in bridge.results:
                reply = channel.masked[proxy.node_id]
                reply.content = RecordDict({"arrays": to_record(agg), "metrics": MetricRecord(dict(fitres.metrics))})
                replies.append(reply)
        else:
            reasons.append(
                f"secure aggregation stopped: fewer than {need} of the {len(originals)} sampled sites stayed in the protocol"
            )
        info["clipped_values"] = int(sum(r.content["metrics"].get("secagg-clipped", 0) for r in replies if not r.has_error()))
        return replies, {
            "bytes_received": channel.masked_bytes,
            "secagg_protocol_bytes": channel.protocol_bytes,
            "secure_aggregation": info,
            "failure_reasons": reasons,
            "rejected": len(channel.rejected),
            "rejected_reasons": sorted(set(channel.rejected.values())),
        }


def make_secagg_mod():
    """The site's side: Flower's `secaggplus_mod` for the protocol's messages, with the
    round's reply turned into the update it masks (Δ = trained − received, weighted by the
    site's `num-examples`, or equally under central DP). A train message without the
    protocol passes through, unless the site's node config says `require-secagg=true`:
    then nothing is trained or sent."""

    def secagg_mod(msg, context, call_next):
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        if RECORD_KEY_CONFIGS not in msg.content.config_records:
            if msg.metadata.message_type == "train" and str(context.node_config.get("require-secagg", "")).lower() in (
                "true",
                "1",
            ):
                raise FedragError("this site requires secure aggregation (node config require-secagg); run with --secagg")
            return call_next(msg, context)
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(msg, context, _update_as_fitres(call_next))

    return secagg_mod


def _arrays(record) -> dict:
    """A packed ArrayRecord as numpy arrays (the site's side needs no torch)."""
    return dict(zip(record.keys(), record.to_numpy_ndarrays()))


def _update_as_fitres(call_next):
    def inner(msg, context):
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
        from flwr.compat.common.recorddict_compat import fitres_to_recorddict

        received = _arrays(msg.content["arrays"])
        reply = call_next(msg, context)
        if reply.has_error():
            raise FedragError(str(reply.error.reason))
        trained = _arrays(reply.content["arrays"])
        metrics = dict(reply.content["metrics"])
        state = context.state.config_records[RECORD_KEY_STATE]  # the protocol's set-up: clip and weight bound
        # central DP's noise is calibrated to a mean in which each site weighs 1/n: every site
        # then masks its update at the full weight bound, whatever its example count
        cfg = msg.content.config_records.get(CONFIG)
        central_dp = cfg is not None and RoundInstruction.from_record(cfg).clipping_norm is not None
        examples = int(state["max_weight"]) if central_dp else int(metrics["num-examples"])
        weight = examples / float(state["max_weight"])
        deltas = [trained[k].astype(np.float64) - received[k].astype(np.float64) for k in sorted(received)]
        # values beyond the clipping range are clipped by the quantiser: say how many
        metrics["secagg-clipped"] = int(sum(int((np.abs(d) * weight > float(state["clipping_range"])).sum()) for d in deltas))
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(deltas), examples, metrics)
        reply.content = fitres_to_recorddict(fitres, keep_input=False)
        return reply

    return inner
