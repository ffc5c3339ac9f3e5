"""Real Flower runs (Simulation Engine / loopback deployment) with tiny models."""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from fedrag.federation.wire.messages import METRIC_KEYS

from fedrag.data import load_corpus, load_qa
from fedrag.data.partition import partition, write_sites
from fedrag.federation.launch.simulation import simulate
from fedrag.federation.task import FedTask
from in_process import ONE_ACTOR, run_apps, run_flower_simulation, run_in_process
from test_cli import run
from test_values_privacy import gaussian_epsilon


@pytest.fixture(scope="module")
def sites(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sites")
    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    return {n: write_sites(partition(passages, train, n, "by-title"), out / f"n{n}") for n in (1, 2, 3)}


@contextlib.contextmanager
def one_thread():
    """As in a Ray worker (1 CPU): the same reduction order, so Adam sees the same gradients."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def like_a_site(task, corpus: str, shared: bool):
    """A central RAG system built as a federated site builds its own by default: a LoRA
    adapter on the retriever, a stale store re-ranked rather than re-embedded."""
    from fedrag.pipeline import build_training_rag

    return build_training_rag(
        corpus, task.models.retriever, task.models.generator, True, task.models.top_k, "cpu", task.training.seed,
        shared_retriever=shared, retriever_lora=True, index_refresh="rerank",
    )  # fmt: skip


def task_for(tiny_models, out, **kw):
    base = dict(
        retriever=tiny_models["retriever"],
        generator=tiny_models["generator"],
        rounds=2,
        local_steps=2,
        batch_size=2,
        lr_generator=1e-2,
        lr_retriever=1e-3,
        out=str(out),
        min_sites=2,
    )
    return FedTask(**{**base, **kw})


@pytest.mark.slow
def test_sites_keep_their_optimizer_moments_between_rounds(tiny_models, sites, tmp_path):
    """With ``keep_optimizer`` a site's AdamW continues across rounds (its moments live in
    Flower's context.state): 1 site x 2 rounds = centralized training in two chunks that
    carry the moments, and differs from chunks that restart them."""
    from safetensors.torch import load_file

    from fedrag.train import TrainConfig, get_state, make_stage, train_stage
    from fedrag.train.optimizer import RoundWindow

    task = task_for(tiny_models, tmp_path / "fed", stage="contrastive", rounds=2, local_steps=3, min_sites=1, keep_optimizer=True)
    simulate(task, sites[1], cpus_per_site=ONE_ACTOR)
    fed = {
        k: v
        for k, v in load_file(str(tmp_path / "fed" / "checkpoint" / "global.safetensors")).items()
        if k.startswith("retriever.")
    }
    site = sites[1][0]

    def central(carry: bool) -> dict:
        rag = like_a_site(task, site["corpus"], shared=True)  # contrastive trains the passage side
        moments = {} if carry else None
        with one_thread():
            for rnd in (1, 2):
                cfg = TrainConfig(
                    steps=3,
                    batch_size=2,
                    lr_retriever=1e-3,
                    seed=task.training.seed + rnd - 1,
                    warmup_ratio=task.training.warmup_ratio,
                )
                rag.sync_store()  # as the site does once the global encoder moved (stale index, re-ranked)
                stage, window = make_stage("contrastive", top_k=task.models.top_k), RoundWindow(6, 3 * (rnd - 1))
                train_stage(stage, rag, load_qa(site["train"]), cfg, optimizer_state=moments, window=window)
        return get_state(rag, ("retriever",))

    kept, restarted = central(True), central(False)
    assert set(fed) == set(kept)
    for k in kept:
        assert torch.allclose(fed[k], kept[k], atol=1e-6, rtol=1e-5), k
    assert max((kept[k] - restarted[k]).abs().max().item() for k in kept) > 1e-4


@pytest.mark.slow
def test_two_site_simulation_sends_only_trainable_tensors(tiny_models, sites, tmp_path, monkeypatch, ray_tmpdir):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmpdir))  # this run's Ray session alone
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "the-callers"))
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    task = task_for(tiny_models, tmp_path / "out", strategy="ra-dit", evaluate_every=2, report_to="mlflow,tensorboard")
    cost = simulate(task, sites[2], cpus_per_site=ONE_ACTOR)
    # Flower's Ray backend set it to this process's sys.path, Ray its debugger: put back as they were
    assert os.environ["PYTHONPATH"] == str(tmp_path / "the-callers"), "the caller's PYTHONPATH is put back"
    assert "PYTHONBREAKPOINT" not in os.environ, os.environ["PYTHONBREAKPOINT"]
    # Ray started one worker process, the one actor's: none idle beside it (one per CPU by Ray's default)
    workers = list(ray_tmpdir.glob("ray/session_2*/logs/python-core-worker-*.log"))
    assert len(workers) == 1, workers
    rounds = json.loads((tmp_path / "out" / "rounds.json").read_text())
    # tracked as HF users know it: the server's per-round metrics and each site's, tagged by its node id
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("fedrag").experiment_id])
    assert run.info.run_name == "out/federated"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "clients_train-loss")] == [1, 2, 3, 4]
    nodes = set(rounds[0]["site_metrics"])
    assert len(nodes) == 2 and all(f"site/{n}/train-loss" in run.data.metrics for n in nodes)
    assert list((tmp_path / "out" / "tracking" / "tensorboard").glob("events.out.tfevents.*"))
    assert [(r["phase"], r["round"]) for r in rounds] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    from fedrag.generate import Generator
    from fedrag.retrieve import Retriever

    gen = Generator.load(tiny_models["generator"], lora=True)
    lora = {f"generator.{n}" for n in gen.trainable_parameters()}
    # a federated retriever's default: its LoRA adapter alone travels
    query = {f"retriever.{n}" for n in Retriever.load(tiny_models["retriever"], lora=True).trainable_parameters()}
    assert query and all("lora_" in n for n in query)
    for r in rounds:
        assert r["replies"] == 2 and r["failures"] == 0
        assert set(r["array_names"]) == (lora if r["phase"] == 0 else query), "only the phase's trainable tensors travel"
        assert r["rejected"] == 0 and set(r["metric_keys"]) <= METRIC_KEYS
        assert r["bytes_sent"] > 0 and r["bytes_received"] == r["bytes_sent"]
    lora_bytes = sum(p.numel() * 4 for p in gen.trainable_parameters().values())
    n_arrays = len(gen.trainable_parameters())
    base_bytes = sum(p.numel() * 4 for p in gen.model.parameters())
    # float32 payload + a small serialisation header per array, far below the frozen base model
    assert 2 * lora_bytes <= rounds[0]["bytes_sent"] <= 2 * (lora_bytes + 256 * n_arrays) < base_bytes
    assert cost["rounds"] == 4
    # sites evaluate the current phase's stage, here every 2nd round only
    assert [r.get("clients_eval_phase") for r in rounds] == [None, 0, None, 1]
    # LSR (phase 1) needs the *global* tuned adapter of phase 0: it travels as frozen context
    assert [r["context_bytes_sent"] > 2 * lora_bytes for r in rounds] == [False, False, True, True]
    # the outputs load as a retriever and generator for `fedrag eval`
    assert Generator.load(str(tmp_path / "out" / "generator"), trainable=True).is_lora  # saved as an adapter
    Retriever.load(str(tmp_path / "out" / "retriever"))


def composed_epsilon(noise: float, sites: int, releases: int, delta: float = 1e-5) -> float:
    """ε of ``releases`` central-DP releases (every site takes part: no subsampling), by hand."""
    return gaussian_epsilon(noise, releases, delta)


def local_epsilon(noise: float, releases: int, delta: float = 1e-5) -> float:
    """A site's ε of ``releases`` local-DP releases, by hand: the sensitivity of a clipped
    update added or replaced is 2C, so each release is the Gaussian mechanism at z / 2."""
    return gaussian_epsilon(noise / 2, releases, delta)


@pytest.mark.slow
def test_dp_epsilon_composes_every_round_of_every_phase(tiny_models, sites, tmp_path):
    """Central DP on the server and local DP on every site, over a 2-phase run (a round each)."""
    task = task_for(
        tiny_models,
        tmp_path / "dp",
        strategy="independent",
        rounds=1,
        dp_noise=1.0,
        dp_clip=0.5,
        local_dp_noise=2.0,
        local_dp_clip=0.5,
        evaluate_every=0,
    )
    run_in_process(task, sites[2])
    rounds = json.loads((tmp_path / "dp" / "rounds.json").read_text())
    for r in rounds:  # each site composes its own releases across both phases
        assert [m["local-dp-releases"] for m in r["site_metrics"].values()] == [r["phase"] + 1] * 2
    for m in rounds[-1]["site_metrics"].values():
        assert m["local-dp-epsilon"] == pytest.approx(local_epsilon(2.0, 2), rel=1e-9)
    local = json.loads((tmp_path / "dp" / "cost.json").read_text())["local_dp"]
    assert len(local["sites"]) == 2 and all(s["releases"] == 2 for s in local["sites"].values())
    report = (tmp_path / "dp" / "privacy.md").read_text()
    assert "## Central differential privacy" in report and "## Local differential privacy" in report
    assert f"| 2 | {local_epsilon(2.0, 2):.3g} |" in report
    assert [(r["phase"], r["dp_releases"]) for r in rounds] == [(0, 1), (1, 2)]
    eps = [r["dp_epsilon"] for r in rounds]
    assert eps[1] > eps[0], "the second phase adds to the first phase's budget"
    assert eps[-1] == pytest.approx(composed_epsilon(1.0, 2, 2), rel=1e-9)
    dp = json.loads((tmp_path / "dp" / "cost.json").read_text())["dp"]
    assert dp["epsilon"] == pytest.approx(eps[-1]) and "site metrics" in dp["not_covered"]


@pytest.mark.parametrize("min_sites", [1, 2])
@pytest.mark.slow
def test_a_crashing_site_is_tolerated_down_to_min_sites_and_fails_the_run_below(tiny_models, sites, tmp_path, min_sites):
    from fedrag.errors import FedragError
    from fedrag.federation.launch.flower_apps import sites_from_paths, to_flower
    from fedrag.federation.server.server_app import raise_recorded_error
    from fedrag.federation.site.policy import TRUSTED

    task = task_for(tiny_models, tmp_path / "ft", stage="ralt", rounds=1, min_sites=min_sites, evaluate_every=0)
    healthy = sites_from_paths(sites[2])

    def flaky(context):
        if int(context.node_config["partition-id"]) == 1:
            raise RuntimeError("site 1 crashed")
        return healthy(context)

    client, server = to_flower(task, flaky, lambda context: TRUSTED)
    with contextlib.suppress(FedragError):  # the ServerApp's failure surfaces here in-process
        if min_sites == 1:  # through Flower's simulation, which turns the exception into an error reply
            run_flower_simulation(client, server, 2)
        else:
            run_apps(client, server, 2)
    if min_sites == 1:
        rounds = json.loads((tmp_path / "ft" / "rounds.json").read_text())
        assert [(r["replies"], r["failures"]) for r in rounds] == [(1, 1)]
        assert (tmp_path / "ft" / "generator").exists()
        raise_recorded_error(task)  # no error recorded
    else:  # fewer replies than min_sites: the run fails loudly and saves no model as its result
        with pytest.raises(FedragError, match="1 of 2 required sites replied"):
            raise_recorded_error(task)
        assert not (tmp_path / "ft" / "generator").exists() and not (tmp_path / "ft" / "cost.json").exists()


@pytest.fixture
def ray_tmpdir():
    """An empty Ray temporary directory of the test's own (for RAY_TMPDIR), removed after."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a limit
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stale_ray_cluster(ray_tmpdir):
    """A Ray temporary directory (for RAY_TMPDIR) naming a cluster that is gone, as a
    killed `ray start --head` leaves it."""
    (ray_tmpdir / "ray").mkdir()
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    return str(ray_tmpdir)


HEAD = """
import sys, time
import ray
ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
         _system_config={"worker_niceness": 0})  # Ray's nice 15 starves the sites on a busy CI box
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(900)
"""


@pytest.fixture
def ray_head():
    """A Ray cluster someone else started (a head on 127.0.0.1 in another process, starting
    while the test goes on): the process, and a function that waits for its address. The
    head and its children are killed by PID afterwards."""
    from fedrag.federation.launch.processes import children

    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    )

    @functools.cache
    def address() -> str:
        line = head.stdout.readline().strip()
        assert line.startswith("127.0.0.1:"), line
        return line

    try:
        yield head, address
    finally:
        for pid in [*children(head.pid)[::-1], head.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        head.wait()


def _killed_after_round_1(cmd: list[str], env: dict) -> None:
    """Run `cmd` until its server saves round 1's checkpoint, where it kills itself with
    SIGKILL (`FEDRAG_FAULT`, an exact step, not a timer); then what it started dies too."""
    proc = subprocess.Popen(
        cmd,
        env={**env, "FEDRAG_FAULT": "fed-checkpoint:1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.wait(timeout=600) == -signal.SIGKILL
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's workers, as a power cut takes them
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.mark.slow
def test_killed_server_resumes_on_a_running_ray_cluster_without_losing_a_round(
    tiny_models, demo_dir, tmp_path, ray_head, stale_ray_cluster, monkeypatch, capsys
):
    """The whole simulation dies after round 1; the same command resumes it, here with
    `--ray-address HOST:PORT`: on a Ray cluster someone else started, which the run leaves
    running, its address recorded in cost.json. The killed run was started on a machine where
    a `ray start` head was killed and its address file stayed behind, which a simulation
    without --ray-address ignores (it starts its own Ray)."""
    head, address = ray_head
    out = tmp_path / "resume"
    cmd = [
        sys.executable,
        "-m",
        "fedrag",
        "federate",
        "--stage",
        "ralt",
        "--sites",
        "2",
        "--rounds",
        "3",
        "--local-steps",
        "2",
        "--batch-size",
        "2",
        "--corpus",
        str(demo_dir / "corpus.jsonl"),
        "--train",
        str(demo_dir / "train.jsonl"),
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        str(out),
        "--evaluate-every",
        "2",
        "--dp-noise",
        "0.8",
        "--local-dp-noise",
        "2.0",
        "--cpus-per-site",
        "2",  # the head's 2 CPUs: one actor serves both sites
    ]
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr")}
    state = out / "checkpoint" / "state.json"
    _killed_after_round_1(cmd, {**env, "RAY_TMPDIR": stale_ray_cluster})  # the whole simulation dies mid-run
    done_before = json.loads(state.read_text())["rounds_done"]
    assert done_before == 1

    def refused(args, message):  # refusals come before Ray or any model: the CLI in this process
        code, _, err = run(monkeypatch, capsys, *args[args.index("federate") :])
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 2 and message in lines[-1] and "Traceback" not in err, err

    weights = out / "checkpoint" / "global.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # a checkpoint truncated on disk: one line, nothing trained
    on_cluster = [*cmd, "--ray-address", address()]
    refused(on_cluster, "corrupt checkpoint")
    weights.write_bytes(good)
    assert json.loads(state.read_text())["rounds_done"] == done_before
    res = subprocess.run(on_cluster, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "cost.json").read_text())["ray_address"] == address()
    assert head.poll() is None, "the cluster outlives the run: fedrag only disconnected from it"
    assert f"{done_before} of 3 rounds done" in res.stderr, "the user is told the run resumes"
    history = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in history] == [1, 2, 3], "every round exactly once across the kill"
    assert all("clients_train-loss" in r for r in history), "rounds finished before the kill keep their site metrics"
    # rounds are counted from the checkpoint across the kill: sites evaluate round 2 (2 | 2) and 3 (last) only
    assert [r["round"] for r in history if "clients_eval_eval-loss" in r] == [2, 3]
    # the privacy accountant was checkpointed: ε after kill + resume is the uninterrupted run's
    assert [r["dp_releases"] for r in history] == [1, 2, 3]
    assert history[-1]["dp_epsilon"] == pytest.approx(composed_epsilon(0.8, 2, 3), rel=1e-9)
    # so were the sites' local-DP ledgers: a round the server lost is resent, never released twice
    for m in history[-1]["site_metrics"].values():
        assert m["local-dp-releases"] == 3 and m["local-dp-epsilon"] == pytest.approx(local_epsilon(2.0, 3), rel=1e-9)
    # a finished run is refused, never rerun over or mixed; its result stays as it was
    cost = (out / "cost.json").read_text()
    refused(cmd, "already holds a finished federated run of this task; pass --overwrite")
    refused([*cmd[: cmd.index("--rounds") + 1], "4", *cmd[cmd.index("--rounds") + 2 :]], "differs in rounds")
    assert (out / "cost.json").read_text() == cost and json.loads((out / "rounds.json").read_text()) == history
    state.write_text(state.read_text()[:40])
    refused(cmd, "corrupt checkpoint")


@pytest.mark.slow
def test_a_crashed_and_resumed_federation_ends_with_the_uninterrupted_weights(tiny_models, sites, tmp_path, monkeypatch):
    """The server dies right after saving round 1 of 2 (`FEDRAG_FAULT=fed-checkpoint:1:RAISE`,
    an exact step); the same task run again resumes there, and its global weights equal those
    of a run that was never interrupted (sites reseed per round, the schedule continues). In
    this process, every message through Flower's wire format; the whole simulation killed
    with SIGKILL and resumed is test_killed_server_resumes_on_a_running_ray_cluster_...."""
    from safetensors.torch import load_file

    from fedrag._faults import Crash

    task = task_for(tiny_models, tmp_path / "killed", stage="ralt", local_steps=1, evaluate_every=0)
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    monkeypatch.setenv("FEDRAG_FAULT", "fed-checkpoint:1:RAISE")
    with one_thread(), pytest.raises(Crash):
        run_in_process(task, sites[2])
    monkeypatch.delenv("FEDRAG_FAULT")
    assert json.loads(state.read_text())["rounds_done"] == 1, "stopped before the end"
    assert not (tmp_path / "killed" / "generator").exists()
    (first,) = json.loads(state.read_text())["history"]  # round 1's record, as the checkpoint keeps it
    start = load_file(str(tmp_path / "killed" / "checkpoint" / "global.safetensors"))  # the weights after round 1
    whole = dataclasses.replace(task, out=str(tmp_path / "whole"))
    with one_thread():
        run_in_process(task, sites[2])  # the same task: it resumes from round 1's checkpoint
        run_in_process(whole, sites[2])
    history = json.loads((tmp_path / "killed" / "rounds.json").read_text())
    assert [r["round"] for r in history] == [1, 2], "every round exactly once"
    assert history[0] == first, "round 1 was not run again (its record, timings included, is the one saved)"
    resumed = load_file(str(tmp_path / "killed" / "checkpoint" / "global.safetensors"))
    uninterrupted = load_file(str(tmp_path / "whole" / "checkpoint" / "global.safetensors"))
    assert set(resumed) == set(uninterrupted)
    assert any(not torch.equal(resumed[k], start[k]) for k in resumed), "round 2 moved the weights"
    for k in resumed:
        assert torch.allclose(resumed[k], uninterrupted[k], rtol=1e-5, atol=1e-7), k


@pytest.mark.slow
def test_fedadam_and_fedprox_aggregate_as_their_definitions_say(tiny_models, sites, demo_dir, tmp_path):
    """One round from the same start, the sites seeded alike: FedAdam's global step is Flower's
    bias-corrected Adam step on FedAvg's pseudo-gradient (Reddi et al. 2021). FedAvg's
    aggregate is computed here from each site's own round (the client code a site runs).
    FedProx is Flower's FedProx (FedAvg on the server, `proximal-mu` in the sites' config);
    its proximal term changes what a site sends (mu > 0). The run also evaluates on the
    server (`--eval-qa`): its figures are those `fedrag eval` gives the saved models."""
    import numpy as np
    from flwr.serverapp.strategy import FedProx
    from safetensors.torch import load_file

    from fedrag.federation.server.aggregator import make_aggregator
    from fedrag.federation.site.local_round import train_round
    from fedrag.federation.wire.tensors import to_wire
    from fedrag.pipeline import build_training_rag
    from fedrag.train import get_state

    held_out = dict(eval_qa=str(demo_dir / "test.jsonl"), eval_corpus=str(demo_dir / "corpus.jsonl"), eval_limit=6)
    task = task_for(
        tiny_models, tmp_path / "fedadam", stage="ralt", rounds=1, aggregator="fedadam", evaluate_every=0, server_lr=0.01,
        **held_out,
    )  # fmt: skip
    run_in_process(task, sites[2])
    fedadam = load_file(str(tmp_path / "fedadam" / "checkpoint" / "global.safetensors"))
    _server_evaluated_the_saved_models(tmp_path / "fedadam", held_out, task.models.top_k)
    plain = task_for(tiny_models, "unused", stage="ralt", rounds=1, evaluate_every=0)
    start = get_state(build_training_rag(sites[2][0]["corpus"], task.models.retriever, task.models.generator), ("generator",))
    replies = []
    with one_thread():
        for site in sites[2]:
            new, metrics = train_round(
                plain, site["corpus"], load_qa(site["train"]), to_wire(start), {"phase": 0, "server-round": 1}
            )
            replies.append((new, metrics.num_examples))
        prox, _ = train_round(
            plain,
            sites[2][0]["corpus"],
            load_qa(sites[2][0]["train"]),
            to_wire(start),
            {"phase": 0, "server-round": 1, "proximal-mu": 10.0},
        )
    total = sum(n for _, n in replies)
    fedavg = {k: sum(new[k].double() * n for new, n in replies) / total for k in start}
    b1, b2, tau, eta, rnd = 0.9, 0.99, 1e-3, 0.01, 1
    eta_norm = eta * np.sqrt(1 - b2 ** (rnd + 1)) / (1 - b1 ** (rnd + 1))
    moved = 0
    for k, x0 in start.items():
        delta = fedavg[k] - x0.double()
        expected = x0.double() + eta_norm * (1 - b1) * delta / (((1 - b2) * delta**2).sqrt() + tau)
        assert torch.allclose(fedadam[k].double(), expected, rtol=1e-4, atol=1e-6), k
        moved += int((delta.abs() > 0).sum())
    assert moved > 0, "FedAvg's aggregate moved the adapter"
    strategy = make_aggregator(task_for(tiny_models, "unused", stage="ralt", aggregator="fedprox", proximal_mu=10.0))
    assert isinstance(strategy, FedProx) and strategy.proximal_mu == 10.0
    assert any(not torch.allclose(prox[k], replies[0][0][k], rtol=1e-4, atol=1e-6) for k in start), "the proximal term acted"


def _server_evaluated_the_saved_models(out: Path, held_out: dict, top_k: int) -> None:
    """The server's `--eval-qa` figures of the last round in rounds.json are those of the
    models the run saved, evaluated on the same questions as `fedrag eval` evaluates them."""
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import build_rag

    (entry,) = json.loads((out / "rounds.json").read_text())
    server = {k[len("server_") :]: v for k, v in entry.items() if k.startswith("server_")}
    assert set(server) == {"em", "f1", "recall@5", "mrr@10"}, entry
    rag = build_rag(held_out["eval_corpus"], str(out / "retriever"), str(out / "generator"), top_k=top_k)
    again = evaluate(rag, load_qa(held_out["eval_qa"], limit=held_out["eval_limit"]), progress=False)
    assert server == pytest.approx({k: again[k] for k in server}, abs=1e-6)
    assert "clients_eval_eval-loss" not in entry, "with --eval-qa the sites do not evaluate"


def test_client_round_uses_the_global_context_of_earlier_phases(tiny_models, sites):
    """Without the context, a site would score LSR with its own stale adapter."""
    from safetensors.torch import save

    from fedrag.federation.site.local_round import site_rag, train_round
    from fedrag.federation.wire.tensors import to_wire
    from fedrag.train import get_state

    task = task_for(tiny_models, "unused", strategy="ra-dit", local_steps=1)
    site = sites[2][0]
    rag = site_rag(task, site["corpus"])
    tuned = {n: t + 0.5 for n, t in get_state(rag, ("generator",)).items()}
    config = {"phase": 1, "server-round": 1, "context": save(tuned)}
    new, metrics = train_round(task, site["corpus"], load_qa(site["train"]), to_wire(get_state(rag, ("retriever",))), config)
    assert set(new) == set(get_state(rag, ("retriever",))), "only the retriever goes back"
    now = get_state(rag, ("generator",))
    assert all(torch.equal(now[k], tuned[k]) for k in tuned), "the site scored with the global adapter"


def test_sites_can_train_with_gradient_checkpointing(tiny_models, sites):
    """``gradient_checkpointing`` reaches the site's generator (two sites back-propagating a
    joint loss through SmolLM2 ran out of memory on a 24 GB box without it)."""
    from fedrag.federation.site.local_round import site_rag, train_round
    from fedrag.federation.wire.tensors import to_wire
    from fedrag.train import get_state

    task = task_for(tiny_models, "unused", stage="rag-sequence", local_steps=1, gradient_checkpointing=True)
    site = sites[2][1]
    rag = site_rag(task, site["corpus"])
    assert not rag.generator.model.is_activation_checkpointing
    start = get_state(rag, ("retriever", "generator"))
    new, _ = train_round(task, site["corpus"], load_qa(site["train"]), to_wire(start), {"phase": 0, "server-round": 1})
    assert rag.generator.model.is_activation_checkpointing
    assert any(not torch.equal(new[k], start[k]) for k in start)


@pytest.mark.slow
def test_a_site_refuses_models_its_policy_does_not_allow(tiny_models, sites, tmp_path):
    from fedrag.errors import FedragError
    from fedrag.federation.site.policy import SitePolicy

    task = task_for(tiny_models, tmp_path / "p", stage="ralt", rounds=1, evaluate_every=0)
    with pytest.raises(FedragError, match="site policy: this site does not load retriever"):
        # no allow-models in the node config: the bundled models only, not the server's chosen paths
        run_in_process(task, sites[2], policy=lambda context: SitePolicy.from_node_config(context.node_config))
    assert not (tmp_path / "p" / "generator").exists() and not (tmp_path / "p" / "cost.json").exists()


def test_site_policy_covers_listed_directories_and_adapter_bases(tiny_models, tmp_path):
    from fedrag.federation.site.policy import SitePolicy
    from fedrag.generate import Generator

    adapter = tmp_path / "shared" / "adapter"
    Generator.load(tiny_models["generator"], lora=True).save(adapter)
    only_shared = SitePolicy.from_node_config({"allow-models": f"minilm, {tmp_path / 'shared'}"})
    assert only_shared.allows("minilm") and not only_shared.allows("smollm2-135m")
    assert not only_shared.allows(str(adapter)), "the adapter's base (a private path) is not allowed"
    both = SitePolicy.from_node_config({"allow-models": f"{tmp_path / 'shared'},{Path(tiny_models['generator']).parent}"})
    assert both.allows(str(adapter)) and both.allows(tiny_models["retriever"])
    assert SitePolicy.from_node_config({}).models == ("minilm", "smollm2-135m")


def _tamper():
    """A Flower mod that makes sites leak through their replies, as malicious sites would:
    site 1 in a metric's key, site 2 as text packed into a correctly named tensor."""
    import numpy as np
    from flwr.app import Array

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        site = int(context.node_config["partition-id"])
        if site == 0 or reply.has_error():
            return reply
        if site == 1:
            reply.content["metrics"]["alice-born-1970-in-oslo"] = 1.0
        else:
            name = next(iter(reply.content["arrays"]))
            reply.content["arrays"][name] = Array(np.frombuffer(b"Alice was born in 1970 in Oslo.", dtype=np.uint8))
        return reply

    return mod


@pytest.mark.slow
def test_the_audit_rejects_leaking_replies(tiny_models, sites, tmp_path):
    from fedrag.federation.site.client_app import make_client_app
    from fedrag.federation.launch.flower_apps import sites_from_paths
    from fedrag.federation.site.policy import TRUSTED
    from fedrag.federation.server.server_app import make_server_app

    task = task_for(tiny_models, tmp_path / "audit", stage="ralt", rounds=1, local_steps=1, min_sites=1, evaluate_every=0)
    client = make_client_app(task, sites_from_paths(sites[3]), lambda context: TRUSTED, mods=[_tamper()])
    run_apps(client, make_server_app(task), 3)
    (entry,) = json.loads((tmp_path / "audit" / "rounds.json").read_text())
    assert (entry["replies"], entry["rejected"]) == (1, 2), entry
    for reason in ("metric keys not in the allow-list", "expected float32"):
        assert any(reason in r for r in entry["rejected_reasons"]), entry["rejected_reasons"]
    assert "alice-born-1970-in-oslo" not in entry["metric_keys"]
    # the rejected replies are out of the aggregate: the global model is the honest site's alone
    from safetensors.torch import load_file

    from fedrag.pipeline import build_training_rag
    from fedrag.train import get_state, make_stage, train_stage

    honest = sites[3][0]
    rag = build_training_rag(
        honest["corpus"], task.models.retriever, task.models.generator, True, task.models.top_k, "cpu", task.training.seed
    )
    with one_thread():
        train_stage(make_stage("ralt", top_k=task.models.top_k), rag, load_qa(honest["train"]), task.train_config(1))
    final = load_file(str(tmp_path / "audit" / "checkpoint" / "global.safetensors"))
    for k, v in get_state(rag, ("generator",)).items():
        assert torch.allclose(final[k], v, atol=1e-6, rtol=1e-5), k


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"note": "/srv/secret"}, "'note' is not a fedrag task setting"),
        ({"rounds": "2 and more text"}, "'rounds' must be int, got str"),
        ({"lora": "yes"}, "'lora' must be bool, got str"),
        ({"dtype": "fp8"}, "--dtype must be one of"),
    ],
)
def test_a_site_audits_the_run_config(extra, message):
    """The ClientApp builds its task with FedTask.from_config(context.run_config): a run
    config carries task settings of their declared types and nothing else."""
    import tomllib

    from fedrag.errors import FedragError
    from fedrag.federation.task import FedTask

    shipped = tomllib.loads((Path(__file__).parents[1] / "examples" / "flower_app" / "pyproject.toml").read_text())["tool"][
        "flwr"
    ]["app"]["config"]
    assert FedTask.from_config(shipped).models.strategy  # the shipped app config passes its own audit
    with pytest.raises(FedragError, match=message):
        FedTask.from_config({**shipped, **extra})


def test_the_audit_refuses_text_in_an_outgoing_config(monkeypatch):
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):  # what a ServerApp process has set
        monkeypatch.setattr(TaskIdentity, name, 1)

    from fedrag.federation.server.message_audit import outgoing_violation
    from fedrag.federation.wire.tensors import tensor_spec

    state = {"generator.w": torch.zeros(2)}
    ok = Message(
        RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"phase": 0, "server-round": 1})}),
        dst_node_id=1,
        message_type="train",
    )
    assert outgoing_violation(ok, tensor_spec(state)) is None
    leak = Message(
        RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"phase": 0, "note": "/srv/secret"})}),
        dst_node_id=1,
        message_type="train",
    )
    assert "not in the allow-list" in outgoing_violation(leak, tensor_spec(state))
    text = Message(
        RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"phase": "zero"})}), dst_node_id=1, message_type="train"
    )
    assert "carries a str" in outgoing_violation(text, tensor_spec(state))


@pytest.mark.slow
def test_a_custom_composition_with_a_user_stage_federates(tiny_models, sites, tmp_path, monkeypatch):
    """A user's own stage federates; the sites run at the caller's priority (Ray would start
    them at nice 15, where any other busy process starves them), a site given no GPU sees
    none whatever Ray's default (Ray warns it will stop hiding them) and no such warning
    reaches the caller, and the simulation leaves no temporary Flower home behind."""
    import tempfile
    import warnings
    from dataclasses import dataclass
    from typing import ClassVar

    import ray.util.debug

    from fedrag.strategies import custom
    from fedrag.train import ContrastiveStage, RALTStage

    seen = tmp_path / "niceness"

    @dataclass
    class HalfRALT:  # a user's own stage class, defined here, not in fedrag
        name: ClassVar[str] = "half-ralt"
        trains: ClassVar[tuple] = ("generator",)
        factor: float = 0.5

        def loss(self, rag, batch):
            with open(seen, "a") as f:  # the site's process is a Ray actor: tell the test what it has
                f.write(f"{os.nice(0)} gpus={os.environ.get('CUDA_VISIBLE_DEVICES')!r}\n")
            out = RALTStage(top_k=2).loss(rag, batch)
            out.loss = out.loss * self.factor
            return out

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    plan = custom("mine", HalfRALT(), ContrastiveStage(top_k=2, hard_negatives=1))
    task = task_for(tiny_models, tmp_path / "mine", strategy="mine", rounds=1, evaluate_every=0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what a GPU machine's driver process may have
    ray.util.debug._logged.discard("ray_accel_env_var_override_on_zero")  # Ray warns once a process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cost = simulate(task, sites[2], plan=plan, cpus_per_site=ONE_ACTOR)
    rounds = json.loads((tmp_path / "mine" / "rounds.json").read_text())
    assert [(r["stage"], r["replies"]) for r in rounds] == [("half-ralt", 2), ("contrastive", 2)]
    assert cost["strategy"] == "mine" and (tmp_path / "mine" / "generator").exists()
    assert set(seen.read_text().splitlines()) == {f"{os.nice(0)} gpus=''"}
    assert not [str(w.message) for w in caught if "Ray will no longer override" in str(w.message)]
    assert not [p.name for p in temp.glob("fedrag-flwr-*")]


def test_strategies_by_import_path_and_the_sites_that_import_them(tmp_path):
    from fedrag.errors import FedragError
    from fedrag.federation.site.policy import SitePolicy

    task = FedTask(strategy="fedrag.strategies.library:ra_dit", top_k=2)
    assert [p.name for p in task.plan().phases] == ["ralt", "lsr"]
    with pytest.raises(FedragError, match="cannot import strategy"):
        FedTask(strategy="no_such_pkg.plans:mine").plan()
    site = SitePolicy.from_node_config({})
    assert site.allows_strategy("ra-dit") and site.allows_strategy("fedrag.strategies.library:ra_dit")
    with pytest.raises(FedragError, match="does not import strategy 'my_pkg.plans:mine'"):
        site.check_strategy("my_pkg.plans:mine")
    assert SitePolicy.from_node_config({"allow-strategies": "my_pkg"}).allows_strategy("my_pkg.plans:mine")


def test_a_message_carries_the_tensors_packed_one_array_per_dtype(tiny_models):
    """Flower sends each Array as its own object (a request per object and hop): a LoRA
    adapter's many small tensors travel as one flat array per dtype and unpack exactly."""
    from fedrag.federation.server.message_audit import _arrays_violation
    from fedrag.federation.wire.tensors import tensor_spec
    from fedrag.federation.wire.tensors import from_wire, packed_spec, to_wire
    from fedrag.generate import Generator

    gen = Generator.load(tiny_models["generator"], lora=True)
    state = {f"generator.{n}": p.detach().clone() for n, p in gen.trainable_parameters().items()}
    state["retriever.scale"] = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    record = to_wire(state)
    assert len(state) > 8 and sorted(record) == ["packed.float32", "packed.float64"]
    layout = tensor_spec(state)
    back = from_wire(record, layout)
    assert set(back) == set(state) and all(torch.equal(back[n], state[n]) and back[n].dtype == state[n].dtype for n in state)
    assert _arrays_violation(record, packed_spec(layout)) is None
    fewer = {n: t for n, t in list(state.items())[1:]}
    assert "expected float32" in _arrays_violation(to_wire(fewer), packed_spec(layout))  # a tensor short: refused
    with pytest.raises(ValueError, match="holds"):
        from_wire(to_wire(state), tensor_spec(fewer))


@pytest.mark.slow
def test_a_site_process_trains_each_round_from_the_global_tensors_alone(tiny_models, sites):
    """A long-lived site process (a simulation's Ray actor) trains round after round on
    one cached model: the last round's leftover gradients must not leak into the next
    (they did, as extra AdamW steps while the schedule was fast-forwarded to the round)."""
    from fedrag.federation.site.local_round import site_rag, train_round
    from fedrag.federation.wire.tensors import to_wire
    from fedrag.train import get_state

    task = task_for(tiny_models, "unused", stage="ralt", local_steps=2)
    site = sites[2][0]
    rag = site_rag(task, site["corpus"])
    start = get_state(rag, ("generator",))
    runs = [
        train_round(task, site["corpus"], load_qa(site["train"]), to_wire(start), {"phase": 0, "server-round": 2})
        for _ in range(2)
    ]
    assert runs[0][1].train_loss == runs[1][1].train_loss
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in start)


def _saved_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return {
        f"{f.parent.name}/{k}": v
        for f in sorted(out.glob("*/*.safetensors"))
        if f.parent.name != "checkpoint"
        for k, v in load_file(str(f)).items()
    }


def _central_and_federated(tiny_models, sites, tmp_path, plan, name):
    """The same plan trained centrally on the site's data and federated over that one site
    for one round (its steps = the local steps): both outputs, saved the same way."""
    from fedrag.strategies import save_outputs
    from fedrag.train import TrainConfig

    task = task_for(tiny_models, tmp_path / "fed", strategy=name, rounds=1, local_steps=3, min_sites=1, evaluate_every=0)
    # the apps in this process, every message through Flower's wire format: the plans are what
    # differ; Ray's transport is the same for every plan (the two-site simulation test runs
    # RA-DIT through it)
    with one_thread():
        run_in_process(task, sites[1], plan=plan)
    site = sites[1][0]
    rag = like_a_site(task, site["corpus"], plan.shared_retriever)
    cfg = TrainConfig(
        steps=3,
        batch_size=2,
        lr_generator=1e-2,
        lr_retriever=1e-3,
        seed=task.training.seed,
        warmup_ratio=task.training.warmup_ratio,
    )
    # a site never takes keep_best from a stage (LSR's default, Phase.config): the central run it equals leaves it off
    cfg = cfg.set(keep_best=False)
    with one_thread():
        results = plan.run(rag, load_qa(site["train"]), cfg)
    save_outputs(rag, tmp_path / "central", results, plan.name, decoding=plan.decoding)
    return _saved_weights(tmp_path / "central"), _saved_weights(tmp_path / "fed")


def _assert_same(central: dict, fed: dict, base: dict) -> None:
    assert central.keys() == fed.keys() and central
    moved = [k for k in central if k in base and not torch.equal(central[k], base[k])]
    assert moved, "training moved the weights"
    for k in central:
        rel = (fed[k].float() - central[k].float()).norm() / max(central[k].float().norm(), 1e-12)
        assert rel <= 1e-3, (k, float(rel))


@pytest.mark.slow
def test_a_custom_plan_with_phase_overrides_federates_as_it_trains_centrally(tiny_models, sites, tmp_path):
    """Per-phase overrides (learning rate, batch size) apply on the site exactly as in
    ``Strategy.run``; the contrastive phase trains the passage side (its default), so the
    site re-embeds its store as the central run does."""
    from fedrag.strategies import custom
    from fedrag.train import ContrastiveStage, RALTStage

    plan = custom(
        "mine", (RALTStage(top_k=2), {"lr_generator": 3e-2, "batch_size": 3}), (ContrastiveStage(top_k=2), {"lr_retriever": 5e-3})
    )
    central, fed = _central_and_federated(tiny_models, sites, tmp_path, plan, "mine")
    from fedrag.pipeline import build_training_rag
    from fedrag.strategies import save_outputs

    base = build_training_rag(
        sites[1][0]["corpus"], tiny_models["retriever"], tiny_models["generator"], top_k=2, shared_retriever=True
    )
    save_outputs(base, tmp_path / "base", [], "base")
    _assert_same(central, fed, _saved_weights(tmp_path / "base"))
    # without the overrides the run is another run: the comparison above would see a site that ignored them
    from fedrag.train import TrainConfig

    rag = build_training_rag(
        sites[1][0]["corpus"], tiny_models["retriever"], tiny_models["generator"], top_k=2, retriever_lora=True
    )
    plain = custom("plain", RALTStage(top_k=2), ContrastiveStage(top_k=2))
    with one_thread():
        results = plain.run(
            rag, load_qa(sites[1][0]["train"]), TrainConfig(steps=3, batch_size=2, lr_generator=1e-2, lr_retriever=1e-3, seed=0)
        )
    save_outputs(rag, tmp_path / "plain", results, "plain")
    other = _saved_weights(tmp_path / "plain")
    assert any(not torch.allclose(other[k].float(), central[k].float()) for k in central)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["independent", "two-phase", "joint-sequence", "joint-token", "ra-dit", "multi-task"])
@pytest.mark.slow
def test_each_built_in_strategy_federates_as_it_trains_centrally(
    monkeypatch, capsys, tiny_models, sites, demo_dir, tmp_path, name
):
    """1 site x 1 round = central training; the federated generator records the central
    decoding, its card says how it was trained, and `eval` decodes it that way."""
    from fedrag.strategies import make_strategy

    plan = make_strategy(name, top_k=FedTask(strategy=name).models.top_k)
    central, fed = _central_and_federated(tiny_models, sites, tmp_path, plan, name)
    for k in central:
        rel = (fed[k].float() - central[k].float()).norm() / max(central[k].float().norm(), 1e-12)
        assert rel <= 1e-3, (k, float(rel))
    generator = tmp_path / "fed" / "generator"
    recorded = json.loads((generator / "fedrag_decoding.json").read_text())
    expected = json.loads((tmp_path / "central" / "generator" / "fedrag_decoding.json").read_text())
    assert (recorded["decoding"], recorded["gamma"]) == (expected["decoding"], expected["gamma"])
    card = (generator / "README.md").read_text()
    assert "federated training" in card and "Rounds per phase: 1" in card and f"`{recorded['decoding']}`" in card
    assert str(tmp_path) not in card and tiny_models["generator"] not in card
    if recorded["decoding"] != "concat":  # eval's default would be concat: it must read the recorded one
        code, out, err = run(
            monkeypatch,
            capsys,
            "eval",
            "--test",
            demo_dir / "test.jsonl",
            "--corpus",
            demo_dir / "corpus.jsonl",
            "--retriever",
            tmp_path / "fed" / "retriever",
            "--generator",
            generator,
            "--test-limit",
            "2",
            "--max-new-tokens",
            "3",
        )
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1])["decoding"] == recorded["decoding"]


def test_ray_address_applies_to_the_simulation_engine_only(demo_dir, tmp_path, monkeypatch, capsys):
    args = ["federate", "--stage", "ralt", "--engine", "deployment", "--ray-address", "127.0.0.1:9"]
    args += ["--corpus", demo_dir / "corpus.jsonl", "--train", demo_dir / "train.jsonl", "--out", tmp_path / "x"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and "--ray-address applies to --engine simulation" in err
