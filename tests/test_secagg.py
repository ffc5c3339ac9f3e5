"""Secure aggregation (Flower's SecAgg+) in real Flower simulations with tiny models."""

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from fedrag.data import load_corpus, load_qa
from fedrag.data.partition import partition, write_sites
from fedrag.errors import FedragError
from fedrag.federation.task import FedTask


@pytest.fixture(scope="module")
def sites(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sites")
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    return {n: write_sites(partition(passages, train, n, "by-title"), out / f"n{n}") for n in (2, 3)}


def _task(tiny_models, out, **kw):
    return FedTask(
        **{
            "stage": "ralt",
            "retriever": tiny_models["retriever"],
            "generator": tiny_models["generator"],
            "rounds": 1,
            "local_steps": 2,
            "batch_size": 2,
            "lr_generator": 1e-2,
            "out": str(out),
            "min_sites": 2,
            "evaluate_every": 0,
            **kw,
        }
    )


def _run(task, paths, fail_site=None):
    """The task in Flower's simulation; `fail_site`: that site's train handler fails
    (after the protocol's set-up and key sharing: a site lost mid-round)."""
    from flwr.simulation import run_simulation

    from fedrag.federation.converter import sites_from_paths, to_flower
    from fedrag.federation.policy import TRUSTED
    from fedrag.federation.simulation import ray_backend
    from fedrag.federation.server import raise_recorded_error

    healthy = sites_from_paths(paths)

    def data(context):
        if fail_site is not None and int(context.node_config["partition-id"]) == fail_site:
            raise RuntimeError(f"site {fail_site} lost")
        return healthy(context)

    client, server = to_flower(task, data, lambda context: TRUSTED)
    with contextlib.suppress(FedragError):
        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=len(paths),
            backend_config=ray_backend(),  # as fedrag.federation.simulate starts Ray
        )
    raise_recorded_error(task)
    return json.loads((Path(task.out) / "rounds.json").read_text())


def _lora(generator) -> dict:
    return {n: p.detach().clone() for n, p in generator.model.named_parameters() if "lora_" in n}


def _adapter(out) -> dict:
    from fedrag.generate import Generator

    return _lora(Generator.load(str(out / "generator"), trainable=True))  # the saved adapter, not merged


def _rel(a: dict, b: dict) -> float:
    num = sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in a)
    den = sum(float(b[k].double().norm() ** 2) for k in b)
    return (num / den) ** 0.5


def _update_rel(secure: dict, plain: dict, start: dict) -> float:
    """Relative difference of the two runs' aggregated updates (tensors minus the start)."""
    return _rel({k: secure[k] - start[k] for k in start}, {k: plain[k] - start[k] for k in start})


@pytest.mark.slow
def test_secagg_gives_fedavg_and_the_server_sees_only_masked_vectors(tiny_models, sites, tmp_path, monkeypatch):
    from fedrag.federation import audit

    seen = []  # what every reply the server's Grid handed back held, as it arrived
    original = audit.AuditedGrid._exchange

    def recording(self, messages, timeout):
        replies = original(self, messages, timeout)
        for r in replies:
            if not r.has_error():
                protocol = r.content.config_records.get("secaggplus_configs", {})
                seen.append((sum(len(a) for a in r.content.array_records.values()), list(protocol.get("masked_params", []))))
        return replies

    plain = _run(_task(tiny_models, tmp_path / "plain"), sites[2])
    monkeypatch.setattr(audit.AuditedGrid, "_exchange", recording)
    secure = _run(_task(tiny_models, tmp_path / "secure", secagg=True), sites[2])
    monkeypatch.undo()

    # the global tensors the round started from: the untrained adapter (seeded)
    start = _start_adapter(tiny_models, tmp_path)
    a, b = _adapter(tmp_path / "secure"), _adapter(tmp_path / "plain")
    print(f"secure vs plain FedAvg update: relative difference {_update_rel(a, b, start):.3g}")
    assert _update_rel(a, b, start) <= 1e-2, "secure aggregation decodes FedAvg's update to quantisation tolerance"
    assert _update_rel(a, b, start) > 0, "the runs are not the same run"

    (entry,) = secure
    assert entry["secure_aggregation"]["sites"] == 2 and entry["secure_aggregation"]["dropped"] == 0
    assert entry["replies"] == 2 and entry["secure_aggregation"]["clipped_values"] == 0
    assert "secure_aggregation" not in plain[0]
    # what the server received: no site's tensors, only masked integer vectors spread over the modulus
    from flwr.common import bytes_to_ndarray

    assert len(seen) == 8 and all(arrays == 0 for arrays, _ in seen), "no reply carried tensors: 4 stages x 2 sites"
    masked = [[bytes_to_ndarray(x) for x in vectors] for _, vectors in seen if vectors]
    assert len(masked) == 2
    for vectors in masked:
        values = np.concatenate([v.reshape(-1) for v in vectors[1:]]).astype(np.float64)
        assert values.min() < 2**28 and values.max() > 2**32 - 2**28, "a masked vector looks uniform over the modulus"
    assert entry["bytes_received"] >= sum(v.nbytes for vs in masked for v in vs)


def _start_adapter(tiny_models, tmp_path) -> dict:
    from fedrag.federation.server import _server_model

    return _lora(_server_model(_task(tiny_models, tmp_path / "start")).generator)


@pytest.mark.slow
def test_a_site_lost_mid_round_within_the_threshold_does_not_stop_the_round(tiny_models, sites, tmp_path):
    plain = _run(_task(tiny_models, tmp_path / "plain", min_sites=2), sites[3], fail_site=2)
    secure = _run(_task(tiny_models, tmp_path / "secure", min_sites=2, secagg=True, secagg_threshold=2), sites[3], fail_site=2)
    assert (plain[0]["replies"], plain[0]["failures"]) == (2, 1)
    assert (secure[0]["replies"], secure[0]["failures"]) == (2, 1)
    assert secure[0]["secure_aggregation"]["dropped"] == 1
    start = _start_adapter(tiny_models, tmp_path)
    assert _update_rel(_adapter(tmp_path / "secure"), _adapter(tmp_path / "plain"), start) <= 1e-2


def test_secagg_settings_are_checked():
    with pytest.raises(FedragError, match="min-sites >= 2"):
        FedTask(stage="ralt", secagg=True, min_sites=1)
    with pytest.raises(FedragError, match="exceeds --min-sites"):
        FedTask(stage="ralt", secagg=True, secagg_threshold=3)
    with pytest.raises(FedragError, match="secagg-clip"):
        FedTask(stage="ralt", secagg_clip=0)
    from fedrag.federation.secagg import threshold

    assert [threshold(FedTask(stage="ralt"), n) for n in (2, 3, 4, 5)] == [2, 2, 3, 3]
