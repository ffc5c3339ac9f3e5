"""Secure aggregation in one process (issue #39, mutation score): Flower's SecAgg+ workflow
(server side, through fedrag's `SecureAggregation`) talks to Flower's `secaggplus_mod` on
three sites (through fedrag's `make_secagg_mod`) by direct calls instead of a network. Each
site's "training" adds a known update, so the decoded aggregate is checked against the
weighted mean worked out here, and the audit's counts (dropped, clipped, bytes, rejected)
against what the sites sent."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedrag.errors import FedragError
from fedrag.federation.task import FedTask

GLOBAL = {"b": torch.tensor([0.5, -0.25]), "a": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
SPEC = {"a": ((2, 2), "float32"), "b": ((2,), "float32")}
DELTAS = {
    11: {"a": torch.tensor([[0.1, -0.2], [0.3, 0.0]]), "b": torch.tensor([0.05, 0.4])},
    12: {"a": torch.tensor([[-0.3, 0.1], [0.2, 0.2]]), "b": torch.tensor([0.0, -0.1])},
    13: {"a": torch.tensor([[0.2, 0.2], [-0.1, 0.5]]), "b": torch.tensor([-0.2, 0.3])},
}
EXAMPLES = {11: 4, 12: 2, 13: 6}


@pytest.fixture(autouse=True)
def _identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):  # what a ServerApp / ClientApp process has set
        monkeypatch.setattr(TaskIdentity, name, 1)


def _config_bytes(cfg) -> int:
    """Bytes a config record carries (bytes values and lists of bytes), counted here."""
    values = [v for v in cfg.values() if isinstance(v, bytes)] + [b for v in cfg.values() if isinstance(v, list) for b in v]
    return sum(len(b) for b in values if isinstance(b, bytes))


class Sites:
    """Three sites running fedrag's secagg mod over Flower's secaggplus_mod, called directly."""

    def __init__(self, deltas=DELTAS, extra_metric=None, node_config=None):
        from flwr.app import Context, RecordDict

        from fedrag.federation.privacy.secagg import make_secagg_mod

        self.deltas, self.extra, self.fail = deltas, extra_metric or {}, set()
        self.mod = make_secagg_mod()
        self.ctx = {
            n: Context(run_id=1, node_id=n, node_config=node_config or {}, state=RecordDict(), run_config={}) for n in deltas
        }
        self.masked = self.protocol = 0

    def train(self, node):
        from flwr.app import Error, Message, MetricRecord, RecordDict

        from fedrag.federation.wire.tensors import from_record, to_record

        def call_next(msg, context):
            assert context is self.ctx[node], "the site's own context"
            assert msg.content["config"]["server-round"] == 3, "the round's own train config"
            if node in self.fail:  # the ClientApp failed: Flower replies with its error
                return Message(Error(code=0, reason=f"site {node} lost"), reply_to=msg)
            got = from_record(msg.content["arrays"])
            metrics = {"num-examples": EXAMPLES[node], "train-loss": 1.5, **self.extra.get(node, {})}
            arrays = to_record({k: got[k] + self.deltas[node][k] for k in got})
            return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)

        return call_next

    def push_pull(self, messages, timeout):
        assert timeout == 30.0, "the round's timeout reaches every stage"
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        # the messages of a stage may share one config record
        cfgs = [m.content.config_records[RECORD_KEY_CONFIGS] for m in messages]
        stage = str(cfgs[0]["stage"])
        self.protocol += sum(_config_bytes(c) for c in cfgs)
        replies = []
        for m in messages:
            node = m.metadata.dst_node_id
            try:
                r = self.mod(copy.deepcopy(m), self.ctx[node], self.train(node))  # each site its own copy, as over a network
            except FedragError as exc:  # what Flower's ClientApp runtime sends back for an exception
                from flwr.app import Error, Message

                replies.append(Message(Error(code=0, reason=str(exc)), reply_to=m))
                continue
            out = _config_bytes(r.content.config_records[RECORD_KEY_CONFIGS])
            if stage == "collect_masked_vectors":
                self.masked += 0 if node in self.extra else out
            elif node not in self.extra or stage != "unmask":
                self.protocol += out
            replies.append(r)
        return replies


def _messages(nodes, **extra):
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedrag.federation.wire.tensors import to_record

    cfg = {"server-round": 3, "phase": 0, **extra}
    content = lambda: RecordDict({"arrays": to_record(GLOBAL), "config": ConfigRecord(cfg)})  # noqa: E731
    return [Message(content(), dst_node_id=n, message_type="train") for n in nodes]


def _run(task, sites, max_weight=8.0, **config):
    from fedrag.federation.wire.tensors import from_record
    from fedrag.federation.privacy.secagg import SecureAggregation

    messages = _messages(sorted(sites.deltas), **config)
    replies, info = SecureAggregation(task, max_weight)(sites.push_pull, messages, 30.0, SPEC)
    return {r.metadata.src_node_id: r for r in replies}, info, from_record


def test_the_server_decodes_the_example_weighted_mean_update():
    task = FedTask(stage="ralt", secagg=True, min_sites=3, secagg_clip=1.0)
    sites = Sites()
    replies, info, from_record = _run(task, sites)
    total = sum(EXAMPLES.values())
    for node, reply in replies.items():
        got = from_record(reply.content["arrays"])
        for k in GLOBAL:
            assert got[k].dtype == GLOBAL[k].dtype
            mean = sum(EXAMPLES[n] * DELTAS[n][k].double() for n in DELTAS) / total
            np.testing.assert_allclose(got[k].double(), GLOBAL[k].double() + mean, atol=2e-5)
        metrics = dict(reply.content["metrics"])
        assert metrics["num-examples"] == EXAMPLES[node] and metrics["train-loss"] == 1.5 and metrics["secagg-clipped"] == 0
    assert info["secure_aggregation"] == {
        "sites": 3, "threshold": 2, "dropped": 0, "clip": 1.0, "quantization": task.privacy.secagg_quantization, "clipped_values": 0
    }  # fmt: skip
    assert info["bytes_received"] == sites.masked > 0 and info["secagg_protocol_bytes"] == sites.protocol > 0
    assert info["failure_reasons"] == [] and info["rejected"] == 0 and info["rejected_reasons"] == []


def test_under_central_dp_every_site_weighs_equally_in_the_decoded_mean():
    """Central DP's noise (zC/n on the mean) assumes each site weighs 1/n: with the round's
    `clipping_norm` in its config (central DP on), a site masks its update at the full weight
    bound whatever its example count, so the server decodes the plain mean of the three
    updates, not the 4:2:6 weighted one. Each site still reports its own count."""
    task = FedTask(stage="ralt", secagg=True, min_sites=3, secagg_clip=1.0)
    replies, info, from_record = _run(task, Sites(), clipping_norm=10.0)
    for node, reply in replies.items():
        got = from_record(reply.content["arrays"])
        for k in GLOBAL:
            mean = sum(DELTAS[n][k].double() for n in DELTAS) / len(DELTAS)
            np.testing.assert_allclose(got[k].double(), GLOBAL[k].double() + mean, atol=2e-5)
        assert dict(reply.content["metrics"])["num-examples"] == EXAMPLES[node]
    assert info["secure_aggregation"]["dropped"] == 0 and info["secure_aggregation"]["clipped_values"] == 0


def test_values_beyond_the_clipping_range_are_clipped_and_counted():
    """Site 13's weight is 6/8; 2.0 · 6/8 = 1.5 > clip 1 (clipped), site 11's 0.4 · 4/8 is not."""
    deltas = {n: {k: v.clone() for k, v in d.items()} for n, d in DELTAS.items()}
    deltas[13]["b"][0] = 2.0
    deltas[11]["b"][1] = 2.0  # 2.0 * 4/8 = 1.0: on the clipping bound, not beyond it
    task = FedTask(stage="ralt", secagg=True, min_sites=3, secagg_clip=1.0, secagg_threshold=3)
    replies, info, from_record = _run(task, Sites(deltas))
    assert info["secure_aggregation"]["clipped_values"] == 1 and info["secure_aggregation"]["threshold"] == 3
    assert dict(replies[13].content["metrics"])["secagg-clipped"] == 1
    # the decoded b[0]: sum of the weighted, clipped values over the sum of the weights
    w = {n: EXAMPLES[n] / 8.0 for n in deltas}
    expected = (w[11] * 0.05 + w[12] * 0.0 + 1.0) / sum(w.values())
    assert float(from_record(replies[11].content["arrays"])["b"][0]) == pytest.approx(0.5 + expected, abs=2e-5)


def test_a_reply_with_a_metric_outside_the_allow_list_is_dropped_from_the_protocol():
    task = FedTask(stage="ralt", secagg=True, min_sites=3, secagg_clip=1.0)
    sites = Sites(extra_metric={12: {"secret-count": 3.0}})
    replies, info, from_record = _run(task, sites)
    assert sorted(replies) == [11, 13] and info["secure_aggregation"]["dropped"] == 1
    assert info["rejected"] == 1 and info["rejected_reasons"] == ["metric keys not in the allow-list: ['secret-count']"]
    total = EXAMPLES[11] + EXAMPLES[13]
    got = from_record(replies[11].content["arrays"])
    mean = (EXAMPLES[11] * DELTAS[11]["a"].double() + EXAMPLES[13] * DELTAS[13]["a"].double()) / total
    np.testing.assert_allclose(got["a"].double(), GLOBAL["a"].double() + mean, atol=2e-5)
    assert info["bytes_received"] == sites.masked


def test_too_few_sites_for_the_threshold_is_refused_before_any_message():
    from fedrag.federation.privacy.secagg import SecureAggregation

    task = FedTask(stage="ralt", secagg=True, min_sites=3, secagg_threshold=3)
    sent = []
    with pytest.raises(FedragError, match=r"no more than the 2 sampled for its threshold \(3\)"):
        SecureAggregation(task, 4.0)(lambda m, t: sent.append(m), _messages([1, 2]), 5.0, SPEC)
    with pytest.raises(FedragError, match="at least 2 sites"):
        SecureAggregation(FedTask(stage="ralt"), 4.0)(lambda m, t: sent.append(m), _messages([1]), 5.0, SPEC)
    assert sent == []


def test_a_site_that_requires_secure_aggregation_refuses_a_plain_train_message():
    from flwr.app import Context, RecordDict

    from fedrag.federation.privacy.secagg import make_secagg_mod

    mod, called = make_secagg_mod(), []
    (msg,) = _messages([1])
    for value in ("true", "1", "TRUE"):
        ctx = Context(run_id=1, node_id=1, node_config={"require-secagg": value}, state=RecordDict(), run_config={})
        with pytest.raises(FedragError) as err:
            mod(msg, ctx, lambda m, c: called.append(m))
        assert str(err.value) == "this site requires secure aggregation (node config require-secagg); run with --secagg"
    ctx = Context(run_id=1, node_id=1, node_config={"require-secagg": "false"}, state=RecordDict(), run_config={})
    got = mod(msg, ctx, lambda m, c: (m, c))
    assert got[0] is msg and got[1] is ctx and called == [], "a plain message passes through to the site"


def test_a_site_that_fails_mid_round_is_dropped_and_its_error_reported():
    task = FedTask(stage="ralt", secagg=True, min_sites=3, secagg_clip=1.0)
    sites = Sites()
    sites.fail.add(12)
    replies, info, from_record = _run(task, sites)
    assert replies[12].has_error() and replies[12].error.reason == "site 12 lost"
    assert not replies[11].has_error() and info["secure_aggregation"]["dropped"] == 1 and info["rejected"] == 0
    got = from_record(replies[13].content["arrays"])
    mean = (EXAMPLES[11] * DELTAS[11]["b"].double() + EXAMPLES[13] * DELTAS[13]["b"].double()) / (EXAMPLES[11] + EXAMPLES[13])
    np.testing.assert_allclose(got["b"].double(), GLOBAL["b"].double() + mean, atol=2e-5)


def test_two_sites_are_enough_and_two_rejected_of_three_stop_the_round():
    task = FedTask(stage="ralt", secagg=True, min_sites=2, secagg_clip=1.0)
    two = {n: DELTAS[n] for n in (11, 12)}
    replies, info, from_record = _run(task, Sites(two))
    mean = (EXAMPLES[11] * DELTAS[11]["a"].double() + EXAMPLES[12] * DELTAS[12]["a"].double()) / (EXAMPLES[11] + EXAMPLES[12])
    np.testing.assert_allclose(from_record(replies[11].content["arrays"])["a"].double(), GLOBAL["a"].double() + mean, atol=2e-5)
    bad = Sites(extra_metric={12: {"secret": 1.0}, 13: {"secret": 2.0}})
    replies, info, _ = _run(FedTask(stage="ralt", secagg=True, min_sites=3, secagg_clip=1.0), bad)
    assert replies == {} and info["rejected"] == 2
    assert info["failure_reasons"] == ["secure aggregation stopped: fewer than 2 of the 3 sampled sites stayed in the protocol"]
