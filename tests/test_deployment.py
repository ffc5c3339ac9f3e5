"""A real multi-site deployment on loopback: flower-superlink + 2 flower-supernode + flwr run."""

import json
import os

import pytest

from fedrag.data import load_corpus, load_qa
from fedrag.data.partition import partition, write_sites
from fedrag.federation.deployment import LocalDeployment, deploy
from fedrag.federation.task import FedTask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sites(demo_dir, tmp_path_factory):
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    return write_sites(partition(passages, train, 2, "iid"), tmp_path_factory.mktemp("dsites"))


def _task(tiny_models, out, **kw):
    return FedTask(stage="ralt", retriever=tiny_models["retriever"], generator=tiny_models["generator"], rounds=1,
                   local_steps=2, batch_size=2, out=str(out), **kw)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_insecure_deployment_completes_and_cleans_up(tiny_models, sites, tmp_path):
    out = tmp_path / "out"
    with LocalDeployment(tmp_path / "dep", threads_per_site=1) as dep:
        dep.start_superlink()
        for i, p in enumerate(sites):  # each site's operator allows the two models this run uses
            dep.start_supernode(i, p["corpus"], p["train"], allow_models=[tiny_models["retriever"], tiny_models["generator"]])
        from fedrag.federation.deployment import _children

        dep.submit(_task(tiny_models, out, evaluate_every=0))
        pids = [p.pid for p in dep.procs.values()] + [c for p in dep.procs.values() for c in _children(p.pid)]
    assert not any(_alive(pid) for pid in pids), "every process we started is stopped"
    rounds = json.loads((out / "rounds.json").read_text())
    assert rounds[0]["replies"] == 2 and rounds[0]["rejected"] == 0 and rounds[0]["metric_keys"]
    assert all(n.startswith("generator.") and "lora_" in n for n in rounds[0]["array_names"])
    assert (out / "generator" / "adapter_config.json").exists()
    assert rounds[0]["clients_threads"] == 1, "the sites' ClientApp processes got the launcher's thread cap"
    assert not any(k.startswith("clients_eval_") for k in rounds[0]), "evaluate-every 0: no evaluate messages"


def test_tls_and_supernode_authentication(tiny_models, sites, tmp_path):
    from fedrag.federation.credentials import make_supernode_keys, make_tls

    certs = make_tls(tmp_path / "certs")
    keys = make_supernode_keys(tmp_path / "certs", 2)
    cost = deploy(_task(tiny_models, tmp_path / "out"), sites, tmp_path / "dep", certs=certs, auth_keys=keys, timeout=600)
    assert cost["rounds"] == 1
    log = (tmp_path / "dep" / "superlink.log").read_text()
    assert "--insecure" not in log and "SuperNode authentication is disabled" not in log
    assert os.path.exists(tmp_path / "out" / "generator")
