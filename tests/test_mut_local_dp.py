"""Local DP's ledger and request identity, value by value (issue #39, mutation score): the
ledger's folder name (an on-disk format a resumed run must find again), the request digest
under a resumed run's round numbering, what the ledger records, and the one-line errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fedrag.errors import FedragError
from fedrag.federation.privacy.local_dp import _digest, ledger_dir, make_local_dp_mod
from fedrag.federation.wire.messages import RoundInstruction
from fedrag.federation.task import FedTask
from test_privacy import _context, _identity, _message, fresh_epsilon  # noqa: F401 - _identity: autouse fixture


def test_the_ledger_folder_is_the_site_and_a_hash_of_the_task_settings(tmp_path):
    task = FedTask(stage="ralt", local_dp_noise=1.0)
    key = hashlib.sha256(json.dumps(task.to_config(), sort_keys=True).encode()).hexdigest()[:16]
    corpus = tmp_path / "s" / "corpus.jsonl"
    assert ledger_dir(task, str(corpus), {"partition-id": 3}) == tmp_path / "s" / ".fedrag-privacy" / f"3-{key}"
    assert ledger_dir(task, str(corpus), {}) == tmp_path / "s" / ".fedrag-privacy" / f"site-{key}"
    assert ledger_dir(task, str(corpus), {"privacy-dir": str(tmp_path / "p")}) == tmp_path / "p" / f"site-{key}"
    other = ledger_dir(FedTask(stage="ralt", local_dp_noise=2.0), str(corpus), {})
    assert other.name.startswith("site-") and other.name != f"site-{key}", "other settings, another ledger"


def _arrays(values):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({"packed.float32": Array(np.asarray(values, np.float32))})


def test_the_request_digest_counts_rounds_across_a_resume():
    a = _arrays([1.0, 2.0])
    d = _digest(a, RoundInstruction.of({"phase": 0, "server-round": 3}))
    assert d == _digest(a, RoundInstruction.of({"phase": 0, "server-round": 3, "round-offset": 0}))
    assert d == _digest(a, RoundInstruction.of({"phase": 0, "server-round": 1, "round-offset": 2})), (
        "round 1 after 2 done = round 3"
    )
    assert d != _digest(a, RoundInstruction.of({"phase": 0, "server-round": 3, "round-offset": 1}))
    assert d != _digest(a, RoundInstruction.of({"phase": 1, "server-round": 3})) and d != _digest(
        _arrays([1.0, 2.5]), RoundInstruction.of({"phase": 0, "server-round": 3})
    )
    assert len(d) == 64 and d == _digest(_arrays([1.0, 2.0]), RoundInstruction.of({"phase": 0, "server-round": 3}))


def _site(tmp_path, task, seen):
    """A site whose 'training' moves every weight by 0.5 and records what it was called with."""
    from flwr.app import Message, MetricRecord, RecordDict

    corpus = {7: str(tmp_path / "a" / "corpus.jsonl"), 8: str(tmp_path / "b" / "corpus.jsonl")}

    def trains(msg, context):
        seen.append((msg.metadata.dst_node_id, context.node_id))
        new = {k: a.numpy() + np.float32(0.5) for k, a in msg.content["arrays"].items()}
        return Message(RecordDict({"arrays": _record(new), "metrics": MetricRecord({"num-examples": 2})}), reply_to=msg)

    tasks = {7: task}
    return make_local_dp_mod(lambda ctx: tasks[ctx.node_id], lambda ctx: (corpus[ctx.node_id], [])), trains


def _record(arrays):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def test_the_site_trains_on_the_message_and_context_it_got_and_records_its_ledger(tmp_path):
    from flwr.app import Context, RecordDict

    task = FedTask(stage="ralt", local_dp_noise=0.5, local_dp_clip=0.3, dp_delta=1e-6)
    seen = []
    mod, trains = _site(tmp_path, task, seen)
    ctx = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    msg = _message({"packed.float32": np.zeros(50, np.float32)}, 1)
    out = mod(msg, ctx, trains)
    assert seen == [(1, 7)], "call_next gets the message and the context"
    folder = ledger_dir(task, str(tmp_path / "a" / "corpus.jsonl"), {"partition-id": 0})
    ledger = json.loads((folder / "ledger.json").read_text())
    assert (ledger["noise_multiplier"], ledger["clip"], ledger["delta"]) == (0.5, 0.3, 1e-6)
    assert ledger["last"]["digest"] == _digest(msg.content["arrays"], RoundInstruction.of(msg.content["config"]))
    assert ledger["last"]["metrics"]["local-dp-epsilon"] == pytest.approx(fresh_epsilon(0.5, 1, 1e-6), rel=1e-9)
    assert out.content["metrics"]["num-examples"] == 2
    evaluate = _message({"packed.float32": np.zeros(2, np.float32)}, 1)
    evaluate.metadata.message_type = "evaluate"
    mod(evaluate, ctx, trains)
    assert seen[-1] == (1, 7), "an evaluation passes the message and context on"
    plain = FedTask(stage="ralt")
    seen.clear()
    make_local_dp_mod(lambda c: plain, lambda c: ("x", []))(msg, ctx, trains)
    assert seen == [(1, 7)]


def test_a_reply_with_other_tensors_is_refused_in_one_line(tmp_path):
    from flwr.app import Message, MetricRecord, RecordDict

    task = FedTask(stage="ralt", local_dp_noise=0.5)
    mod = make_local_dp_mod(lambda c: task, lambda c: (str(tmp_path / "corpus.jsonl"), []))

    def renames(msg, context):
        arrays = _record({"other.float32": np.zeros(2, np.float32)})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    with pytest.raises(FedragError) as err:
        mod(_message({"packed.float32": np.zeros(2, np.float32)}, 1), _context({}), renames)
    assert str(err.value) == "local DP: the reply's tensors differ from the global ones it updates"


def test_damaged_and_unwritable_ledgers_say_what_and_what_to_do(tmp_path):
    task = FedTask(stage="ralt", local_dp_noise=1.0)
    folder = ledger_dir(task, str(tmp_path / "corpus.jsonl"), {})
    folder.mkdir(parents=True)
    mod = make_local_dp_mod(lambda c: task, lambda c: (str(tmp_path / "corpus.jsonl"), []))
    start = {"packed.float32": np.zeros(2, np.float32)}
    tail = "this site's releases so far cannot be counted: restore it from a backup, or start the run under a new --out"
    for text, kind in (("{", "JSONDecodeError"), ('{"delta": 1e-5, "accountant": {"junk": 1}}', "ValueError")):
        (folder / "ledger.json").write_text(text)
        with pytest.raises(FedragError) as err:
            mod(_message(start, 1), _context({}), lambda m, c: None)
        assert str(err.value) == f"local DP: the site's privacy ledger {folder / 'ledger.json'} is damaged ({kind}); {tail}"
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "ledger"
    seen = []
    _, trains = _site(tmp_path, task, seen)
    with pytest.raises(FedragError) as err:
        mod(_message(start, 1), _context({"privacy-dir": str(bad)}), trains)
    assert str(err.value).startswith("local DP: cannot write the site's privacy ledger ")
    assert str(err.value).endswith("(Not a directory); give the SuperNode a writable node config privacy-dir")
