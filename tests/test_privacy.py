"""Local differential privacy on a site: clip, noise, account, and never release twice."""

import json

import numpy as np
import pytest

from fedrag.federation.privacy.local_dp import ledger_dir, make_local_dp_mod
from fedrag.federation.task import FedTask


@pytest.fixture(autouse=True)
def _identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):  # what a ClientApp process has set
        monkeypatch.setattr(TaskIdentity, name, 1)


def _message(arrays: dict, rnd: int):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "config": ConfigRecord({"phase": 0, "server-round": rnd, "round-offset": 0}),
        }
    )
    return Message(content, dst_node_id=1, message_type="train")


def _context(node_config: dict):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def fresh_epsilon(z: float, releases: int, delta: float = 1e-5) -> float:
    """ε of `releases` local releases at noise multiplier z, from dp-accounting directly (not
    fedrag's `accountant`/`release_event`): the update is clipped to C and noised with std zC,
    its sensitivity is 2C (any clipped update may become any other), so each release is the
    Gaussian mechanism at z / 2."""
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z / 2), releases))
    return acc.get_epsilon(delta)


def test_a_site_clips_noises_and_counts_each_release_once(tmp_path):
    """The reply leaves clipped to C plus N(0, (zC)^2) noise; ε is a fresh composition of
    the releases; a round asked for again (a server that lost the reply) gets the same
    released reply without retraining and without a new release; the site can demand more
    noise than the task."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    task = FedTask(stage="ralt", local_dp_noise=0.05, local_dp_clip=1.0)
    corpus = tmp_path / "site0" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("")
    rng = np.random.default_rng(0)
    start = {"packed.float32": rng.normal(size=20_000).astype(np.float32)}
    trained = []

    def site_trains(msg, context):  # the ClientApp: moves every weight by 0.1 (update norm ~14, far above C)
        trained.append(1)
        new = {k: v + np.float32(0.1) for k, v in ((k, a.numpy()) for k, a in msg.content["arrays"].items())}
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in new.items()}),
                    "metrics": MetricRecord({"num-examples": 4, "train-loss": 1.0}),
                }
            ),
            reply_to=msg,
        )

    mod = make_local_dp_mod(lambda context: task, lambda context: (str(corpus), []))
    context = _context({"partition-id": 0})
    out = mod(_message(start, 1), context, site_trains)
    update = out.content["arrays"]["packed.float32"].numpy() - start["packed.float32"]
    # clipped to norm 1 along (1, ..., 1), plus noise of std 0.05 per coordinate (0.05 along any direction)
    direction = np.full(update.shape, 1 / np.sqrt(update.size))
    assert float(update @ direction) == pytest.approx(1.0, abs=0.25)
    assert float(np.std(update - direction)) == pytest.approx(0.05, rel=0.03)
    metrics = out.content["metrics"]
    assert metrics["local-dp-releases"] == 1 and metrics["local-dp-epsilon"] == pytest.approx(fresh_epsilon(0.05, 1), rel=1e-9)

    again = mod(_message(start, 1), context, site_trains)  # the same request: nothing retrained, nothing released
    assert len(trained) == 1
    np.testing.assert_array_equal(
        again.content["arrays"]["packed.float32"].numpy(), out.content["arrays"]["packed.float32"].numpy()
    )
    assert dict(again.content["metrics"]) == dict(out.content["metrics"]), "the same keys: Flower aggregates only those"

    second = mod(_message(start, 2), context, site_trains)
    assert len(trained) == 2 and second.content["metrics"]["local-dp-releases"] == 2
    assert second.content["metrics"]["local-dp-epsilon"] == pytest.approx(fresh_epsilon(0.05, 2), rel=1e-9)
    ledger = json.loads((ledger_dir(task, str(corpus), {"partition-id": 0}) / "ledger.json").read_text())
    assert ledger["noise_multiplier"] == 0.05 and ledger["accountant"]

    strict = _context({"partition-id": 1, "local-dp-noise": 4.0})  # the site's own floor wins over the task's 0.05
    noisy = mod(_message(start, 1), strict, site_trains)
    assert float(np.std(noisy.content["arrays"]["packed.float32"].numpy() - start["packed.float32"])) == pytest.approx(
        4.0, rel=0.03
    )
    assert noisy.content["metrics"]["local-dp-epsilon"] == pytest.approx(fresh_epsilon(4.0, 1), rel=1e-9)


def test_without_local_dp_the_reply_passes_untouched(tmp_path):
    task = FedTask(stage="ralt")
    mod = make_local_dp_mod(lambda context: task, lambda context: (str(tmp_path / "corpus.jsonl"), []))
    msg = _message({"packed.float32": np.ones(3, np.float32)}, 1)
    sentinel = object()
    assert mod(msg, _context({}), lambda m, c: sentinel) is sentinel
    assert not (tmp_path / ".fedrag-privacy").exists()


def test_an_evaluate_message_is_not_noised(tmp_path):
    from flwr.app import ConfigRecord, Message, RecordDict

    task = FedTask(stage="ralt", local_dp_noise=1.0)
    mod = make_local_dp_mod(lambda context: task, lambda context: (str(tmp_path / "corpus.jsonl"), []))
    msg = Message(RecordDict({"config": ConfigRecord({"phase": 0, "server-round": 1})}), dst_node_id=1, message_type="evaluate")
    sentinel = object()
    assert mod(msg, _context({}), lambda m, c: sentinel) is sentinel


def test_an_unwritable_ledger_sends_nothing_and_says_so_in_one_line(tmp_path):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from fedrag.errors import FedragError

    (tmp_path / "a-file").write_text("")
    task = FedTask(stage="ralt", local_dp_noise=1.0)
    mod = make_local_dp_mod(lambda context: task, lambda context: (str(tmp_path / "corpus.jsonl"), []))
    start = {"packed.float32": np.zeros(4, np.float32)}

    def site_trains(msg, context):
        arrays = ArrayRecord({k: Array(a.numpy() + 1) for k, a in msg.content["arrays"].items()})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    with pytest.raises(FedragError, match="cannot write the site's privacy ledger .* privacy-dir"):
        mod(_message(start, 1), _context({"privacy-dir": str(tmp_path / "a-file" / "ledger")}), site_trains)


def test_central_dp_noise_is_not_replayable_from_the_task_seed():
    """Flower's server-side noise draws from numpy's global RNG, which the training loop seeds
    from the task's seed; the aggregator reseeds it from OS entropy."""
    from fedrag.federation.server.aggregator import make_aggregator
    from fedrag.train.loop import seed_everything

    seed_everything(0)
    replay = np.random.normal(size=8)
    seed_everything(0)  # as a process that trained before it serves
    make_aggregator(FedTask(stage="ralt", dp_noise=1.0, min_sites=1))
    assert not np.allclose(np.random.normal(size=8), replay)


def test_a_damaged_ledger_is_one_line_and_nothing_is_trained(tmp_path):
    from fedrag.errors import FedragError

    task = FedTask(stage="ralt", local_dp_noise=1.0)
    folder = ledger_dir(task, str(tmp_path / "corpus.jsonl"), {})
    folder.mkdir(parents=True)
    (folder / "ledger.json").write_text('{"noise_multiplier": 1.0, "acc')
    mod = make_local_dp_mod(lambda context: task, lambda context: (str(tmp_path / "corpus.jsonl"), []))
    trained = []
    with pytest.raises(FedragError, match="privacy ledger .* is damaged"):
        mod(_message({"packed.float32": np.zeros(2, np.float32)}, 1), _context({}), lambda m, c: trained.append(1))
    assert not trained
