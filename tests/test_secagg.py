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
from in_process import run_apps, run_flower_simulation
from test_federation import one_thread


@pytest.fixture(scope="module")
def sites(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sites")
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    return {n: write_sites(partition(passages, train, n, "by-title"), out / f"n{n}") for n in (2, 3)}


@pytest.fixture(scope="module")
def uneven(sites, tmp_path_factory) -> list[dict]:
    """The two sites of `sites[2]`, but site 1 keeps a single training question: with
    batch_size 2 it trains on 1 example a step where site 0 trains on 2, so their rounds
    report num-examples 2 and 4 (2 steps) and FedAvg weighs them 1/3 and 2/3, not 1/2 each."""
    import shutil

    out = tmp_path_factory.mktemp("uneven")
    paths = []
    for i, site in enumerate(sites[2]):
        d = out / f"site{i}"
        d.mkdir()
        shutil.copy(site["corpus"], d / "corpus.jsonl")
        lines = Path(site["train"]).read_text().splitlines(keepends=True)
        assert len(lines) >= 2
        (d / "train.jsonl").write_text("".join(lines if i == 0 else lines[:1]))
        paths.append({"corpus": str(d / "corpus.jsonl"), "train": str(d / "train.jsonl")})
    return paths


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


def _run(task, paths, fail_site=None, ray=False):
    """The task over fedrag's apps in this process (`ray`: in Flower's simulation); `fail_site`:
    that site's train handler fails (after the protocol's set-up and key sharing: a site lost
    mid-round)."""
    from fedrag.federation.launch.flower_apps import sites_from_paths, to_flower
    from fedrag.federation.site.policy import TRUSTED
    from fedrag.federation.server.server_app import raise_recorded_error

    healthy = sites_from_paths(paths)

    def data(context):
        if fail_site is not None and int(context.node_config["partition-id"]) == fail_site:
            raise RuntimeError(f"site {fail_site} lost")
        return healthy(context)

    client, server = to_flower(task, data, lambda context: TRUSTED)
    with contextlib.suppress(FedragError):
        if ray:  # as fedrag.federation.simulate starts Ray
            run_flower_simulation(client, server, len(paths))
        else:
            run_apps(client, server, len(paths))
    raise_recorded_error(task)
    return json.loads((Path(task.run.out) / "rounds.json").read_text())


# secure vs plain FedAvg update, relative difference: measured 2.6e-5 and 3.5e-5 (SecAgg+'s quantisation,
# 2**22 levels over ±secagg-clip); ~10x that. An unweighted mean of the uneven sites' updates is 0.33 away.
SECAGG_TOLERANCE = 3e-4


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
def test_secagg_gives_fedavg_and_the_server_sees_only_masked_vectors(tiny_models, uneven, tmp_path, monkeypatch):
    """SecAgg+ decodes FedAvg's example-weighted mean update: the sites report different
    example counts (`uneven`), so an unweighted mean would differ from FedAvg's by
    (1/2 - 1/3)·|Δ0 - Δ1|, far above the quantisation tolerance."""
    from fedrag.federation.server import message_audit as audit

    seen = []  # what every reply the server's Grid handed back held, as it arrived
    original = audit.AuditedGrid._exchange

    def recording(self, messages, timeout):
        replies = original(self, messages, timeout)
        for r in replies:
            if not r.has_error():
                protocol = r.content.config_records.get("secaggplus_configs", {})
                seen.append((sum(len(a) for a in r.content.array_records.values()), list(protocol.get("masked_params", []))))
        return replies

    plain = _run(_task(tiny_models, tmp_path / "plain"), uneven)
    monkeypatch.setattr(audit.AuditedGrid, "_exchange", recording)
    secure = _run(_task(tiny_models, tmp_path / "secure", secagg=True), uneven, ray=True)  # the one through Ray
    monkeypatch.undo()

    # the global tensors the round started from: the untrained adapter (seeded)
    start = _start_adapter(tiny_models, tmp_path)
    a, b = _adapter(tmp_path / "secure"), _adapter(tmp_path / "plain")
    # the weights matter here: the sites' own rounds (run again in-process, as a Ray worker runs them) weighted
    # by their example counts give the plain run's update (measured 4.4e-7 apart); their unweighted mean does not
    own = _site_updates(tiny_models, tmp_path, uneven)
    assert [n for _, n in own] == [4, 2] and all(set(d) == set(start) for d, _ in own)
    weighted = {k: start[k] + sum(n * d[k] for d, n in own) / sum(n for _, n in own) for k in start}
    unweighted = {k: start[k] + sum(d[k] for d, _ in own) / len(own) for k in start}
    print(
        f"secure vs plain FedAvg update: relative difference {_update_rel(a, b, start):.3g}; "
        f"by-hand weighted mean vs plain {_update_rel(weighted, b, start):.3g}, unweighted vs plain "
        f"{_update_rel(unweighted, b, start):.3g}"
    )
    assert _update_rel(weighted, b, start) <= 1e-5, "plain FedAvg is the example-weighted mean of the sites' updates"
    assert _update_rel(unweighted, b, start) > 100 * SECAGG_TOLERANCE, "an unweighted mean is far from FedAvg's"
    assert _update_rel(a, b, start) <= SECAGG_TOLERANCE, "secure aggregation decodes FedAvg's weighted update"
    assert _update_rel(a, b, start) > 0, "the runs are not the same run"

    (entry,) = secure
    for run in (plain, secure):  # the weights the aggregation had to apply
        assert sorted(m["num-examples"] for m in run[0]["site_metrics"].values()) == [2, 4]
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


def _site_updates(tiny_models, tmp_path, paths) -> list[tuple[dict, int]]:
    """Each site's round from the untrained adapter, run here with the code a Ray worker runs:
    (its adapter update by LoRA tensor name, its num-examples)."""
    from fedrag.data import load_qa
    from fedrag.federation.wire.tensors import to_wire
    from fedrag.federation.site.local_round import train_round
    from fedrag.pipeline import build_training_rag
    from fedrag.train import get_state

    task = _task(tiny_models, tmp_path / "by-hand")
    start = get_state(build_training_rag(paths[0]["corpus"], task.models.retriever, task.models.generator), ("generator",))
    out = []
    with one_thread():
        for site in paths:
            new, metrics = train_round(
                task, site["corpus"], load_qa(site["train"]), to_wire(start), {"phase": 0, "server-round": 1}
            )
            out.append(({k.removeprefix("generator."): (new[k] - start[k]).double() for k in start}, metrics.num_examples))
    return out


def _start_adapter(tiny_models, tmp_path) -> dict:
    from fedrag.federation.server.run_loop import _server_model

    return _lora(_server_model(_task(tiny_models, tmp_path / "start")).generator)


@pytest.mark.slow
def test_a_site_lost_mid_round_within_the_threshold_does_not_stop_the_round(tiny_models, sites, tmp_path):
    plain = _run(_task(tiny_models, tmp_path / "plain", min_sites=2), sites[3], fail_site=2)
    secure = _run(_task(tiny_models, tmp_path / "secure", min_sites=2, secagg=True, secagg_threshold=2), sites[3], fail_site=2)
    assert (plain[0]["replies"], plain[0]["failures"]) == (2, 1)
    assert (secure[0]["replies"], secure[0]["failures"]) == (2, 1)
    assert secure[0]["secure_aggregation"]["dropped"] == 1
    start = _start_adapter(tiny_models, tmp_path)
    rel = _update_rel(_adapter(tmp_path / "secure"), _adapter(tmp_path / "plain"), start)
    print(f"a site lost: secure vs plain FedAvg update, relative difference {rel:.3g}")
    assert 0 < rel <= SECAGG_TOLERANCE, "the two remaining sites' update, decoded to quantisation tolerance"


def _released_update(tiny_models, tmp_path, out) -> np.ndarray:
    """Every value of the round's released adapter update, as one vector."""
    start = _start_adapter(tiny_models, tmp_path)
    released = _adapter(out)
    return np.concatenate([(released[k].double() - start[k].double()).reshape(-1).numpy() for k in start])


@pytest.mark.slow
def test_secagg_with_local_dp_releases_each_sites_noise_averaged_and_accounted(tiny_models, uneven, tmp_path):
    """SecAgg+ over local DP (z, C): each site clips its update to C and adds N(0, (zC)²)
    before masking; SecAgg+ decodes the example-weighted mean, so with weights w = (2/3, 1/3)
    the released update's values carry noise of std zC·√(w0² + w1²) = zC·√5/3 (the clipped
    updates, ~C/√8192 per value, are negligible next to it). Each site's ε, reported through
    the protocol's metrics, is the Gaussian mechanism's at z/2 (sensitivity 2C), computed
    independently."""
    from test_values_privacy import dp_accounting_epsilon, gaussian_epsilon

    z, clip, delta = 2.0, 0.005, 1e-5
    (entry,) = _run(_task(tiny_models, tmp_path / "ldp", secagg=True, local_dp_noise=z, local_dp_clip=clip), uneven)
    assert entry["replies"] == 2 and entry["secure_aggregation"]["sites"] == 2
    assert entry["secure_aggregation"]["dropped"] == 0 and entry["secure_aggregation"]["clipped_values"] == 0
    assert sorted(m["num-examples"] for m in entry["site_metrics"].values()) == [2, 4]
    for m in entry["site_metrics"].values():
        assert m["local-dp-releases"] == 1
        assert m["local-dp-epsilon"] == pytest.approx(gaussian_epsilon(z / 2, 1, delta), rel=1e-9)
        assert m["local-dp-epsilon"] == pytest.approx(dp_accounting_epsilon(z / 2, 1, delta), rel=1e-9)
    cost = json.loads((tmp_path / "ldp" / "cost.json").read_text())
    assert len(cost["local_dp"]["sites"]) == 2 and cost["secure_aggregation"]["rounds"] == 1
    for s in cost["local_dp"]["sites"].values():
        assert s["epsilon"] == pytest.approx(gaussian_epsilon(z / 2, 1, delta), rel=1e-9)

    update = _released_update(tiny_models, tmp_path, tmp_path / "ldp")
    expected = z * clip * 5**0.5 / 3
    print(f"released update: {update.size} values, std {update.std():.4g} (expected {expected:.4g}), mean {update.mean():.3g}")
    assert update.size >= 4000  # the std is estimated to ~1/√(2·size)
    # measured 0.00734 against 0.00745 (sampling error ~0.8%); one site's noise alone, not averaged, would be
    # zC = 0.01, no noise ~1e-4 (the weighting itself is checked, noise-free, by the FedAvg test above)
    assert float(update.std()) == pytest.approx(expected, rel=0.05), "each site's noise, averaged as its update"
    assert abs(float(update.mean())) < 5 * expected / update.size**0.5


@pytest.mark.slow
def test_secagg_with_central_and_local_dp_adds_and_accounts_each_noise_once(tiny_models, sites, tmp_path):
    """SecAgg+ with central DP (noise z_c, clip C_c) and local DP (z_l, C_l) in one round of
    two equally weighted sites (central DP's accounting needs equal weights). Each site clips
    its update and adds N(0, (z_l C_l)²) before masking; SecAgg+ decodes the mean, where the
    two sites' noise averages to std z_l C_l / √2; the server adds N(0, (z_c C_c / 2)²) to that
    mean. The clipped updates are ~C / √(8192 values) per value, negligible next to the noise,
    so the released update's values have std √((z_l C_l)² / 2 + (z_c C_c / 2)²). The ε's are
    the Gaussian mechanism's, computed independently: z_c for the central release (one site
    added or removed moves the sum by C_c), z_l / 2 for each site's release (sensitivity 2 C_l)."""
    from test_values_privacy import dp_accounting_epsilon, gaussian_epsilon

    zc, cc, zl, cl, delta = 1.0, 0.01, 2.0, 0.005, 1e-5
    task = _task(
        tiny_models, tmp_path / "dp", secagg=True, dp_noise=zc, dp_clip=cc, local_dp_noise=zl, local_dp_clip=cl, dp_delta=delta
    )
    (entry,) = _run(task, sites[2])
    assert entry["replies"] == 2 and entry["secure_aggregation"]["sites"] == 2
    assert entry["secure_aggregation"]["dropped"] == 0 and entry["secure_aggregation"]["clipped_values"] == 0
    assert sorted(m["num-examples"] for m in entry["site_metrics"].values()) == [4, 4]
    assert entry["dp_releases"] == 1
    assert entry["dp_epsilon"] == pytest.approx(gaussian_epsilon(zc, 1, delta), rel=1e-9)
    assert entry["dp_epsilon"] == pytest.approx(dp_accounting_epsilon(zc, 1, delta), rel=1e-9)
    for m in entry["site_metrics"].values():
        assert m["local-dp-releases"] == 1
        assert m["local-dp-epsilon"] == pytest.approx(gaussian_epsilon(zl / 2, 1, delta), rel=1e-9)
    cost = json.loads((tmp_path / "dp" / "cost.json").read_text())
    assert cost["dp"]["epsilon"] == pytest.approx(gaussian_epsilon(zc, 1, delta), rel=1e-9)
    assert len(cost["local_dp"]["sites"]) == 2 and cost["secure_aggregation"]["rounds"] == 1
    for s in cost["local_dp"]["sites"].values():
        assert s["epsilon"] == pytest.approx(gaussian_epsilon(zl / 2, 1, delta), rel=1e-9)

    update = _released_update(tiny_models, tmp_path, tmp_path / "dp")
    expected = ((zl * cl) ** 2 / 2 + (zc * cc / 2) ** 2) ** 0.5
    print(f"released update: {update.size} values, std {update.std():.4g} (expected {expected:.4g}), mean {update.mean():.3g}")
    assert update.size >= 4000
    assert float(update.std()) == pytest.approx(expected, rel=0.05), "local noise averaged over 2 sites + central noise"
    assert abs(float(update.mean())) < 5 * expected / update.size**0.5


def test_secagg_settings_are_checked():
    with pytest.raises(FedragError, match="min-sites >= 2"):
        FedTask(stage="ralt", secagg=True, min_sites=1)
    with pytest.raises(FedragError, match="exceeds --min-sites"):
        FedTask(stage="ralt", secagg=True, secagg_threshold=3)
    with pytest.raises(FedragError, match="secagg-clip"):
        FedTask(stage="ralt", secagg_clip=0)
    from fedrag.federation.privacy.secagg import threshold

    assert [threshold(FedTask(stage="ralt"), n) for n in (2, 3, 4, 5)] == [2, 2, 3, 3]
