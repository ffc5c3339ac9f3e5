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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_sites(demo_dir, tmp_path_factory):
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    return write_sites(partition(passages, train, 3, "iid"), tmp_path_factory.mktemp("dsites3"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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


def test_federate_submits_to_a_remote_superlink_over_tls_with_supernode_authentication(tiny_models, three_sites, tmp_path):
    """A federation someone else runs (SuperLink + 3 authenticated SuperNodes over TLS, with
    the credentials `fedrag credentials` makes): `fedrag federate --superlink HOST:PORT
    --root-certificates CA` only submits the run. Also: a user's strategy named by import
    path, imported by sites whose policy lists its package; secure aggregation over 3 sites
    with threshold 2, one site's worker killed: that site fails after the protocol's key
    sharing and each round completes without it; every process started is stopped after."""
    from fedrag.federation.launch.deployment import Certs
    from fedrag.federation.launch.processes import children
    from fedrag.federation.site.resident_worker import wait_listening

    made = subprocess.run(
        [sys.executable, "-m", "fedrag", "credentials", "--out", str(tmp_path / "certs")]
        + ["--host", "127.0.0.1", "--host", "localhost", "--sites", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    d = tmp_path / "certs"
    assert oct((d / "server.key").stat().st_mode & 0o777) == "0o600" and oct((d / "site1_key").stat().st_mode & 0o777) == "0o600"
    certs = Certs(ca=d / "ca.crt", cert=d / "server.pem", key=d / "server.key")
    keys = [(d / f"site{i}_key", d / f"site{i}_key.pub") for i in range(3)]
    again = subprocess.run(
        [sys.executable, "-m", "fedrag", "credentials", "--out", str(d), "--host", "127.0.0.1", "--sites", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode != 0 and "pass --overwrite" in again.stderr and "Traceback" not in again.stderr
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "userplans.py").write_text(USER_PLANS)
    out = tmp_path / "out"
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
        pids = [p.pid for p in dep.procs.values()] + [c for p in dep.procs.values() for c in children(p.pid)]
    assert not any(_alive(pid) for pid in pids), "every process we started is stopped"
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["rounds"] == 2 and "INSECURE" not in res.stderr
    assert "--insecure" not in log and "SuperNode authentication is disabled" not in log
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["stage"] for r in rounds] == ["half-ralt"] * 2, "the user's stage ran on the sites"
    for r in rounds:
        assert r["replies"] == 2 and r["rejected"] == 0 and r["metric_keys"]
        assert r["failures"] == 1 and "resident worker" in r["failure_reasons"][0]
        # under secure aggregation: the SuperNodes kept each site's protocol state between its messages
        assert r["secure_aggregation"]["sites"] == 3 and r["secure_aggregation"]["dropped"] == 1
        assert all(n.startswith("generator.") and "lora_" in n for n in r["array_names"])
        assert r["clients_threads"] == 1, "the sites' ClientApp processes got the launcher's thread cap"
        assert not any(k.startswith("clients_eval_") for k in r), "evaluate-every 0: no evaluate messages"
    assert (out / "generator" / "adapter_config.json").exists()
    # each site's resident worker keeps its models: a fresh ClientApp process would import
    # sentence-transformers and load both models again (seconds) every round
    seen = [[(m["model-loads"], m["process-rounds"]) for m in r["site_metrics"].values()] for r in rounds]
    assert seen == [[(1, 1)] * 2, [(1, 2)] * 2], "each live site's one worker process built its models once, for both rounds"
    assert "masked (the server decodes only the sum)" in (out / "privacy.md").read_text()


def _submit(dep: LocalDeployment, certs, tiny_models: dict, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`fedrag federate --superlink` to `dep`'s SuperLink, as its user types it."""
    args = ["--superlink", f"127.0.0.1:{dep.port}", "--root-certificates", str(certs.ca), "--strategy", "userplans:plan"]
    args += ["--rounds", "2", "--local-steps", "2", "--batch-size", "2", "--evaluate-every", "0", "--min-sites", "2"]
    args += ["--secagg", "--secagg-threshold", "2", "--retriever", tiny_models["retriever"]]
    args += ["--generator", tiny_models["generator"], "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "fedrag", "federate", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": dep.env["PYTHONPATH"]},
    )


def _state(pid: int) -> str:
    """`pid`'s state letter (``T`` when stopped), or "" once it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _stop_family(proc: subprocess.Popen) -> None:
    """A launcher still running when its test fails (an assertion, pytest's timeout): it and
    every process below it are killed, by PID, so no SuperLink or SuperNode outlives the test
    (killing the launcher alone leaves them running)."""
    from fedrag.federation.launch.processes import children

    if proc.poll() is not None:
        return
    for pid in children(proc.pid)[::-1]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_site_killed_mid_round_fails_the_run_loudly_and_a_resume_completes_it(tiny_models, demo_dir, tmp_path):
    """Two SuperNodes, --min-sites 2; site 1 dies before round 2. The run must end with
    exit != 0 after the round timeout, round 1's checkpoint intact, no process left; the same
    command (site back) resumes; Ctrl-C after its round 2 ends it with 130, one line and no
    process left; the same command again finishes round 3: every round ran exactly once.
    --out is relative (as the README writes it): the launcher resolves it before any
    subprocess runs. Through the CLI's --tls --supernode-auth (certificates and site keys
    made in OUT/credentials)."""
    from fedrag.federation.launch.processes import children

    timeout = 45  # a round under a loaded CI box: ClientApp processes start, import and train
    cmd = [
        sys.executable,
        "-m",
        "fedrag",
        "federate",
        "--engine",
        "deployment",
        "--stage",
        "ralt",
        "--sites",
        "2",
        "--rounds",
        "3",
        "--local-steps",
        "1",
        "--batch-size",
        "2",
        "--evaluate-every",
        "0",
        "--round-timeout",
        str(timeout),
        "--corpus",
        str(demo_dir / "corpus.jsonl"),
        "--train",
        str(demo_dir / "train.jsonl"),
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        "runs/dep",
        "--tls",
        "--supernode-auth",
    ]
    out = tmp_path / "runs" / "dep"
    state = out / "checkpoint" / "state.json"
    # the server holds itself (SIGSTOP) once round 1's checkpoint is saved: site 1 dies then,
    # certainly before round 2 is sent, whatever the load; the server then goes on
    env = {**os.environ, "FEDRAG_FAULT": "fed-checkpoint:1:STOP"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started: list[int] = []
    try:
        held: list[int] = []
        while not held:  # the event, not a timer: a process of the run is stopped
            assert proc.poll() is None, proc.communicate()
            started = sorted(set(started) | set(children(proc.pid)))
            held = [p for p in started if _state(p) == "T"]
            time.sleep(0.1)
        assert json.loads(state.read_text())["rounds_done"] == 1
        site1 = [p for p in children(proc.pid) if "flower-supernode" in _cmdline(p) and "site=1" in _cmdline(p)]
        assert len(site1) == 1, "round 1 finished and site 1's SuperNode is running"
        for pid in [site1[0], *children(site1[0])]:  # the site dies with its ClientApp
            os.kill(pid, signal.SIGKILL)
        for pid in held:
            os.kill(pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=timeout + 300)  # a guard against a hang, not a timing
    finally:
        _stop_family(proc)
    assert proc.returncode not in (0, None), err
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert "round 2: 1 of 2 required sites replied" in last and "run the same command again to resume" in last, err
    assert "Traceback" not in err and "INSECURE" not in err, err
    assert (out / "credentials").is_dir()
    logs = [p.read_text() for p in out.glob("fedrag-deploy-*/superlink.log")]
    assert logs and not any("--insecure" in t or "SuperNode authentication is disabled" in t for t in logs)
    assert not any(_alive(p) for p in started + [proc.pid]), "every process the launcher started is stopped"
    assert json.loads(state.read_text())["rounds_done"] == 1, "the last good round's checkpoint is intact"
    assert not (out / "cost.json").exists() and not (out / "generator").exists(), "a failed run leaves no result"

    _interrupted_after_its_first_round(cmd, tmp_path, state, timeout)
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout + res.stderr
    history = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in history] == [1, 2, 3] and all(r["replies"] == 2 for r in history)
    assert json.loads((out / "cost.json").read_text())["rounds"] == 3


def _interrupted_after_its_first_round(cmd: list[str], cwd: Path, state: Path, timeout: int) -> None:
    """The same command resumes; once its first round (round 2) is saved, Ctrl-C as a terminal
    sends it: SIGINT to the command's process group. It exits 130 with one line, nothing of
    the deployment is left running, and round 2's checkpoint is kept."""
    from fedrag.federation.launch.processes import children

    env = {**os.environ, "FEDRAG_FAULT": "fed-checkpoint:1:STOP"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    started: list[int] = []
    try:
        held: list[int] = []
        while not held:  # the event, not a timer: the ServerApp holds itself after saving round 2
            assert proc.poll() is None, proc.communicate()
            started = sorted(set(started) | set(children(proc.pid)))
            held = [p for p in started if _state(p) == "T"]
            time.sleep(0.1)
        started = sorted(set(started) | set(children(proc.pid)))
        os.killpg(proc.pid, signal.SIGINT)  # while round 3 cannot start: the server is still held
        for pid in held:
            os.kill(pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=timeout + 300)  # a guard against a hang, not a timing
    finally:
        _stop_family(proc)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "interrupted (Ctrl-C)" in lines[-1] and "Traceback" not in err, err
    assert not any(_alive(p) for p in started), "every process of the deployment is stopped"
    assert json.loads(state.read_text())["rounds_done"] == 2, "round 2's checkpoint is kept"


@pytest.mark.slow
def test_the_app_trains_under_flwr_run_in_flowers_local_simulation(tiny_models, demo_dir, tmp_path):
    """`fedrag app --out app && flwr run app --run-config ...`, as a Flower tutorial starts:
    Flower's default connection starts a local SuperLink whose simulation gives each of its
    2 nodes only `partition-id`/`num-partitions`; each ClientApp takes its partition of the
    run config's corpus and train, and the server writes the run's outputs."""
    from fedrag.federation.launch.processes import BIN, free_port
    from fedrag.federation.launch.processes import children

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
            if (
                entry.name.isdigit()
                and "flower-superlink" in _cmdline(int(entry.name))
                and str(home) in _cmdline(int(entry.name))
            ):
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
