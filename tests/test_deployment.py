"""A real multi-site deployment on loopback: flower-superlink + 2 flower-supernode + flwr run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedrag.data import load_corpus, load_qa
from fedrag.data.partition import partition, write_sites
from fedrag.federation.launch.deployment import LocalDeployment
from fedrag.federation.launch.processes import children, proc_stat
from procs import cmdline, running
from test_cli import run
from wheel_venv import ROOT, install_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_sites(demo_dir, tmp_path_factory):
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    return write_sites(partition(passages, train, 3, "iid"), tmp_path_factory.mktemp("dsites3"))


def _left_running(seen: dict[int, object], within: float = 10) -> dict[int, str]:
    """Of the `seen` processes, those still running after up to `within` s (a killed process
    takes a moment to go under load: a guard, not a timing), with their command lines."""
    deadline = time.monotonic() + within
    while True:
        now = running(seen)
        left = {pid: cmdline(pid) for pid, start in seen.items() if now.get(pid) == start}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


USER_PLANS = """
from dataclasses import dataclass
from typing import ClassVar

from fedrag.strategies import custom
from fedrag.train import RALTStage


@dataclass
class HalfRALT:  # a user's own stage, in the user's own package
    name: ClassVar[str] = "half-ralt"
    trains: ClassVar[tuple] = ("generator",)

    def loss(self, rag, batch):
        out = RALTStage(top_k=2).loss(rag, batch)
        out.loss = out.loss * 0.5
        return out


plan = custom("mine", HalfRALT())
"""


def test_federate_submits_to_a_remote_superlink_over_tls_with_supernode_authentication(
    tiny_models, three_sites, tmp_path, monkeypatch, capsys
):
    """A federation someone else runs (SuperLink + 3 authenticated SuperNodes over TLS, with
    the credentials `fedrag credentials` makes): `fedrag federate --superlink HOST:PORT
    --root-certificates CA` only submits the run. Also: a user's strategy named by import
    path, imported by sites whose policy lists its package; secure aggregation over 3 sites
    with threshold 2, one site's worker killed: that site fails after the protocol's key
    sharing and the round completes without it; every process started is stopped after. That
    a site's resident worker keeps its models from round to round is the interrupted
    deployment's test (below)."""
    from fedrag.federation.launch.deployment import Certs
    from fedrag.federation.site.resident_worker import wait_listening

    # the CLI in this process: a `python -m fedrag` would import its libraries again (~2 CPU-s)
    code, _, err = run(
        monkeypatch,
        capsys,
        "credentials",
        "--out",
        tmp_path / "certs",
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
        "--sites",
        "3",
    )
    assert code == 0, err[-2000:]
    d = tmp_path / "certs"
    assert oct((d / "server.key").stat().st_mode & 0o777) == "0o600" and oct((d / "site1_key").stat().st_mode & 0o777) == "0o600"
    certs = Certs(ca=d / "ca.crt", cert=d / "server.pem", key=d / "server.key")
    keys = [(d / f"site{i}_key", d / f"site{i}_key.pub") for i in range(3)]
    code, _, err = run(monkeypatch, capsys, "credentials", "--out", d, "--host", "127.0.0.1", "--sites", "2")
    assert code != 0 and "pass --overwrite" in err and "Traceback" not in err
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "userplans.py").write_text(USER_PLANS)
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()  # the submitting process's temporary directory
    with LocalDeployment(tmp_path / "dep", certs, keys, threads_per_site=1) as dep:
        dep.env["PYTHONPATH"] = str(tmp_path / "user")  # the user's package is installed on every host
        dep.env["OMP_NUM_THREADS"] = "2"  # what the sites would get without the cap
        dep.start_superlink()
        for i, p in enumerate(three_sites):  # each site's operator allows the two models this run uses
            dep.start_supernode(
                i,
                p["corpus"],
                p["train"],
                allow_models=[tiny_models["retriever"], tiny_models["generator"]],
                allow_strategies=["userplans"],
            )
        sock, name = dep.workers[2]
        wait_listening(sock, dep.procs[name], tmp_path / "dep" / f"{name}.log")
        dep.procs[name].kill()  # site 2's models die with its worker; its SuperNode still answers the protocol
        dep.procs[name].wait()
        res = _submit(dep, certs, tiny_models, out, tmp_path)
        log = (tmp_path / "dep" / "superlink.log").read_text()
        seen = running([p.pid for p in dep.procs.values()] + [c for p in dep.procs.values() for c in children(p.pid)])
    left = _left_running(seen)
    assert not left, f"every process we started is stopped: {left}"
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["rounds"] == 1 and "INSECURE" not in res.stderr
    assert "--insecure" not in log and "SuperNode authentication is disabled" not in log
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["stage"] for r in rounds] == ["half-ralt"], "the user's stage ran on the sites"
    for r in rounds:
        assert r["replies"] == 2 and r["rejected"] == 0 and r["metric_keys"]
        assert r["failures"] == 1 and "resident worker" in r["failure_reasons"][0]
        # under secure aggregation: the SuperNodes kept each site's protocol state between its messages
        assert r["secure_aggregation"]["sites"] == 3 and r["secure_aggregation"]["dropped"] == 1
        assert all(n.startswith("generator.") and "lora_" in n for n in r["array_names"])
        assert r["clients_threads"] == 1, "the sites' ClientApp processes got the launcher's thread cap"
        assert not any(k.startswith("clients_eval_") for k in r), "evaluate-every 0: no evaluate messages"
    assert (out / "generator" / "adapter_config.json").exists()
    assert "masked (the server decodes only the sum)" in (out / "privacy.md").read_text()
    assert not list((tmp_path / "tmp").iterdir()), "a finished submission leaves nothing in the temporary directory"


def _submit(dep: LocalDeployment, certs, tiny_models: dict, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`fedrag federate --superlink` to `dep`'s SuperLink, as its user types it."""
    args = ["--superlink", f"127.0.0.1:{dep.port}", "--root-certificates", str(certs.ca), "--strategy", "userplans:plan"]
    args += ["--rounds", "1", "--local-steps", "2", "--batch-size", "2", "--evaluate-every", "0", "--min-sites", "2"]
    args += ["--secagg", "--secagg-threshold", "2", "--retriever", tiny_models["retriever"]]
    args += ["--generator", tiny_models["generator"], "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "fedrag", "federate", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": dep.env["PYTHONPATH"], "TMPDIR": str(cwd / "tmp")},
    )


def _stop_family(proc: subprocess.Popen) -> None:
    """A launcher still running when its test fails (an assertion, pytest's timeout): it and
    every process below it are killed, by PID, so no SuperLink or SuperNode outlives the test
    (killing the launcher alone leaves them running)."""
    if proc.poll() is not None:
        return
    for pid in children(proc.pid)[::-1]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


USER_RALT = """
from dataclasses import dataclass
from typing import ClassVar

from fedrag.strategies import custom
from fedrag.train import RALTStage


@dataclass
class MyRALT(RALTStage):  # a stage of the user's own, by its own name
    name: ClassVar[str] = "my-ralt"


plan = custom("mine", MyRALT(top_k=2))
"""


def test_a_deployment_interrupted_then_resumed_then_failed_by_a_site_keeps_its_last_round(tiny_models, demo_dir, tmp_path):
    """Two SuperNodes, --min-sites 2, 4 rounds. Ctrl-C once round 2 is saved ends the run with
    130, one line and no process left; each site's resident worker built its models once for
    both rounds. The same command resumes (round 3 with both sites); then site 1 dies: the
    run ends with exit != 0 after the round timeout naming round 4, round 3's checkpoint
    intact, no process left and no result. That a resumed run goes on to
    its end is the simulation's kill tests' (test_federation.py); a deployment resumes from the
    same checkpoint. --out is relative (as the README writes it): the launcher resolves it
    before any subprocess runs. Through the CLI's --tls --supernode-auth (certificates and
    site keys made in OUT/credentials). Every process runs from the built wheel installed in a
    fresh venv, none imports the checkout; the strategy is the user's own by import path
    (`--strategy userplans:plan`, a package of the user's on the path), which the sites import."""
    bin_dir, env = install_wheel(tmp_path)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "userplans.py").write_text(USER_RALT)
    env = {**env, "PYTHONPATH": str(tmp_path / "user")}
    timeout = 45  # a round under a loaded CI box: ClientApp processes start, import and train
    cmd = [str(bin_dir / "fedrag"), "federate", "--engine", "deployment", "--strategy", "userplans:plan", "--sites", "2"]
    cmd += ["--rounds", "4", "--local-steps", "1", "--batch-size", "2", "--evaluate-every", "0"]
    cmd += ["--round-timeout", str(timeout), "--corpus", str(demo_dir / "corpus.jsonl"), "--train", str(demo_dir / "train.jsonl")]
    cmd += ["--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"]]
    cmd += ["--out", "runs/dep", "--tls", "--supernode-auth"]
    out = tmp_path / "runs" / "dep"
    state = out / "checkpoint" / "state.json"

    proc, seen, held = _held_after_saving(2, cmd, tmp_path, env)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C as a terminal sends it, while round 3 cannot start
        for pid in held:
            os.kill(pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=timeout + 300)  # a guard against a hang, not a timing
    finally:
        _stop_family(proc)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "interrupted (Ctrl-C)" in lines[-1] and "Traceback" not in err and "INSECURE" not in err, err
    left = _left_running(seen)
    assert not left, f"every process of the deployment is stopped: {left}"
    assert json.loads(state.read_text())["rounds_done"] == 2, "round 2's checkpoint is kept"
    history = json.loads(state.read_text())["history"]
    assert [(r["stage"], r["replies"]) for r in history] == [("my-ralt", 2)] * 2, "the user's strategy ran on both sites"
    # each site's resident worker keeps its models: a fresh ClientApp process would import
    # sentence-transformers and load both models again (seconds) every round
    loads = [[(m["model-loads"], m["process-rounds"]) for m in r["site_metrics"].values()] for r in history]
    assert loads == [[(1, 1)] * 2, [(1, 2)] * 2], "each site's one worker process built its models once, for both rounds"
    assert (out / "credentials").is_dir()

    # the same command resumes; once its round 3 is saved, site 1 dies, certainly before round 4 is sent
    proc, seen, held = _held_after_saving(1, cmd, tmp_path, env)
    try:
        site1 = [p for p in seen if "flower-supernode" in cmdline(p) and "site=1" in cmdline(p)]
        assert len(site1) == 1, "round 3 finished and site 1's SuperNode is running"
        for pid in [site1[0], *children(site1[0])]:  # the site dies with its ClientApp
            os.kill(pid, signal.SIGKILL)
        for pid in held:
            os.kill(pid, signal.SIGCONT)
        res_out, err = proc.communicate(timeout=timeout + 300)  # a guard against a hang, not a timing
    finally:
        _stop_family(proc)
    assert proc.returncode not in (0, None), err
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert "round 4: 1 of 2 required sites replied" in last and "run the same command again to resume" in last, err
    assert "resuming" in res_out + err and "Traceback" not in err, err
    logs = [p.read_text() for p in out.glob("fedrag-deploy-*/superlink.log")]
    assert logs and not any("--insecure" in t or "SuperNode authentication is disabled" in t for t in logs)
    logs = "".join(p.read_text() for p in out.glob("fedrag-deploy-*/*.log"))
    assert str(ROOT / "fedrag") not in logs, "no process of the deployment imported the checkout"
    left = _left_running(seen)
    assert not left, f"every process the launcher started is stopped: {left}"
    assert json.loads(state.read_text())["rounds_done"] == 3, "the last good round's checkpoint is intact"
    assert not (out / "cost.json").exists() and not (out / "generator").exists(), "a failed run leaves no result"


def _held_after_saving(saves: int, cmd: list[str], cwd: Path, env: dict) -> tuple[subprocess.Popen, dict[int, object], list[int]]:
    """`cmd` started in a session of its own, its server holding itself (SIGSTOP, at an exact
    step: `FEDRAG_FAULT`) once it saved its `saves`-th round: the launcher, every process seen
    below it (pid -> process) and the held ones."""
    env = {**env, "FEDRAG_FAULT": f"fed-checkpoint:{saves}:STOP"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    seen = running([proc.pid])
    held: list[int] = []
    try:
        while not held:  # the event, not a timer: a process of the run is stopped
            assert proc.poll() is None, proc.communicate()
            seen.update(running(children(proc.pid)))
            held = [p for p in seen if (st := proc_stat(p)) and st.state == "T"]
            time.sleep(0.1)
    except BaseException:
        _stop_family(proc)
        raise
    seen.update(running(children(proc.pid)))
    return proc, seen, held


@pytest.mark.slow
def test_the_app_trains_under_flwr_run_in_flowers_local_simulation(tiny_models, demo_dir, tmp_path):
    """`fedrag app --out app && flwr run app --run-config ...`, as a Flower tutorial starts:
    Flower's default connection starts a local SuperLink whose simulation gives each of its
    2 nodes only `partition-id`/`num-partitions`; each ClientApp takes its partition of the
    run config's corpus and train, and the server writes the run's outputs."""
    from fedrag.federation.launch.processes import BIN, free_port

    home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # flwr starts flower-superlink from PATH
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "FEDRAG_CACHE": str(tmp_path / "cache"),  # where the nodes write their partitions, read below
    }
    made = subprocess.run(
        [sys.executable, "-m", "fedrag", "app", "--out", str(tmp_path / "app")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0 and "flwr run" in made.stdout and "<federation>" not in made.stdout, made.stderr
    out = tmp_path / "run"
    config = (
        f'strategy="" stage="ralt" rounds=1 local-steps=1 batch-size=2 evaluate-every=0 '
        f'retriever="{tiny_models["retriever"]}" generator="{tiny_models["generator"]}" '
        f'corpus="{demo_dir / "corpus.jsonl"}" train="{demo_dir / "train.jsonl"}" out="{out}"'
    )
    try:
        res = subprocess.run(
            [str(BIN / "flwr"), "run", str(tmp_path / "app"), "--stream", "--run-config", config],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:  # flwr run leaves its local SuperLink running: stop it (and its simulation) by PID
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and "flower-superlink" in cmdline(int(entry.name)) and str(home) in cmdline(int(entry.name)):
                for pid in [*children(int(entry.name))[::-1], int(entry.name)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "generator" / "adapter_config.json").exists(), res.stdout[-3000:] + res.stderr[-3000:]
    history = json.loads((out / "rounds.json").read_text())
    assert len(history) == 1 and history[0]["replies"] == 2, "both simulated nodes trained on their partitions"
    # what the run's nodes wrote (nothing here computes a partition): two disjoint parts, together the file
    written = sorted((tmp_path / "cache" / "partitions").glob("*/site*/train.jsonl"))
    parts = [{e.id for e in load_qa(p)} for p in written]
    assert len(parts) == 2 and all(parts) and not parts[0] & parts[1], written
    assert parts[0] | parts[1] == {e.id for e in load_qa(demo_dir / "train.jsonl")}, "the sites' parts"
