"""A site refuses, in one line naming both versions, a round from a server that runs
another fedrag version; the server's one-line error carries that line."""

import pytest

import fedrag
from fedrag.errors import FedragError
from fedrag.federation.site.policy import VERSION_KEY, check_version, version_mod


@pytest.fixture(autouse=True)
def _identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):  # what a ClientApp process has set
        monkeypatch.setattr(TaskIdentity, name, 1)


def _message(config: dict, message_type: str = "train"):
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    content = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"phase": 0, "server-round": 1, **config})})
    return Message(content, dst_node_id=1, message_type=message_type)


def _context():
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})


def _client_app(loaded: list):
    from fedrag.federation.site.client_app import make_client_app
    from fedrag.federation.site.policy import TRUSTED
    from fedrag.federation.task import FedTask

    def site_data(context):  # the first thing a round reads after the policy: nothing may get this far
        loaded.append(1)
        raise AssertionError("the site read its data")

    return make_client_app(FedTask(stage="ralt"), site_data, lambda context: TRUSTED)


@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_a_site_refuses_a_server_with_another_version_in_one_line(message_type):
    loaded: list = []
    app = _client_app(loaded)
    with pytest.raises(FedragError) as exc:
        app(_message({VERSION_KEY: "0.0.1"}, message_type), _context())
    line = str(exc.value)
    assert "\n" not in line and not loaded
    assert f"this site runs fedrag {fedrag.__version__}, the server fedrag 0.0.1" in line


def test_a_server_that_names_no_version_is_refused_and_the_same_version_passes():
    with pytest.raises(FedragError, match=f"this site runs fedrag {fedrag.__version__}, the server an older fedrag"):
        check_version({"phase": 0})
    check_version({VERSION_KEY: fedrag.__version__})
    sentinel = object()
    assert version_mod(_message({VERSION_KEY: fedrag.__version__}), _context(), lambda m, c: sentinel) is sentinel


def test_a_message_without_a_round_config_passes():
    """Secure aggregation's set-up messages carry only its own record; its training message has the round's."""
    from flwr.app import ConfigRecord, Message, RecordDict

    msg = Message(RecordDict({"secaggplus": ConfigRecord({"stage": "setup"})}), dst_node_id=1, message_type="train")
    sentinel = object()
    assert version_mod(msg, _context(), lambda m, c: sentinel) is sentinel


def test_the_server_reports_the_sites_line():
    """Flower returns a site's exception as its traceback text; the server's error names the line."""
    from types import SimpleNamespace

    from fedrag.federation.server.message_audit import failure_reason

    with pytest.raises(FedragError) as exc:
        check_version({VERSION_KEY: "9.9.9"})
    reason = f'Traceback (most recent call last):\n  File "x.py", line 1\nfedrag.errors.FedragError: {exc.value}\n'
    assert failure_reason(SimpleNamespace(error=SimpleNamespace(reason=reason))) == str(exc.value)


def test_a_federated_run_ends_with_the_sites_version_line(tiny_models, demo_dir, tmp_path, monkeypatch):
    from fedrag.federation.server import run_loop as server_run
    from in_process import one_round, run_in_process

    monkeypatch.setattr(server_run, "__version__", "0.0.1")  # the server (this process) says another version
    task, sites = one_round(tiny_models, demo_dir, tmp_path, "by-title")
    with pytest.raises(FedragError, match=f"this site runs fedrag {fedrag.__version__}, the server fedrag 0.0.1"):
        run_in_process(task, sites)  # fedrag's server and site apps; only the server module is patched
    assert not (tmp_path / "run" / "cost.json").exists()


def test_the_audit_lets_the_version_out_as_text_only():
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from fedrag.federation.server.message_audit import outgoing_violation
    from fedrag.federation.wire.tensors import tensor_spec

    state = {"generator.w": torch.zeros(2)}

    def message(config):
        content = RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"phase": 0, **config})})
        return Message(content, dst_node_id=1, message_type="train")

    assert outgoing_violation(message({VERSION_KEY: fedrag.__version__}), tensor_spec(state)) is None
    assert "carries a int" in outgoing_violation(message({VERSION_KEY: 1}), tensor_spec(state))
