"""No silent success, nothing half-written, nothing mixed: interrupts, reruns, corrupt files."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lines import message_lines
from test_cli import run

TRAIN = ["train", "--stage", "ralt", "--steps", "1", "--batch-size", "2"]


def _train_args(demo_dir, tiny_models, out):
    return [
        *TRAIN,
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        out,
    ]


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    "sig,code,word,ignored",
    [
        (signal.SIGINT, 130, "interrupted", False),
        (signal.SIGINT, 130, "interrupted", True),
        (signal.SIGTERM, 143, "terminated", False),
    ],
)
@pytest.mark.slow
def test_a_signal_exits_non_zero_and_leaves_nothing(tmp_path, demo_dir, tiny_models, warm_cli, sig, code, word, ignored):
    """``ignored``: started with SIGINT ignored (as a non-interactive shell starts background
    jobs, or a parent process that ignores it): Ctrl-C still interrupts fedrag. That case is a
    `python -m fedrag` of its own (a disposition is inherited from the parent process); the
    others a `fedrag` forked from one that imported the libraries (`warm_cli`)."""
    out = tmp_path / "run"
    args = [str(a) for a in _train_args(demo_dir, tiny_models, out)]
    args[args.index("--steps") + 1] = "100000"
    # the signal arrives mid-training, at the end of step 2, whatever the load
    fault = f"train-step:2:{signal.Signals(sig).name[3:]}"
    proc = subprocess.run(
        [sys.executable, "-m", "fedrag", *args] if ignored else ["fedrag", *args],
        capture_output=True,
        text=True,
        env={**(os.environ if ignored else warm_cli), "PYTHONUNBUFFERED": "1", "FEDRAG_FAULT": fault},
        preexec_fn=_ignore_sigint if ignored else None,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == code, err
    # progress lines (the store's encoding) may precede it; the interrupt is one last line
    lines = [line for line in err.strip().splitlines() if line.strip() and "passages (" not in line]
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err, err
    assert "run the same command again to continue" in lines[0], err
    assert [p.name for p in tmp_path.iterdir()] == [".run.partial"], "no output published, the progress kept, no lock left"


def test_train_refuses_an_existing_run_and_overwrite_replaces_it_whole(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    out = tmp_path / "run"
    code, _, err = run(monkeypatch, capsys, *_train_args(demo_dir, tiny_models, out))
    assert code == 0, err
    stray = out / "generator" / "stray.txt"
    stray.write_text("from an older run")
    before = (out / "cost.json").read_text()
    code, _, err = run(monkeypatch, capsys, *_train_args(demo_dir, tiny_models, out))
    assert code == 2 and "holds a fedrag train output; pass --overwrite" in err
    assert stray.exists() and (out / "cost.json").read_text() == before, "the refused run touched nothing"
    code, _, err = run(monkeypatch, capsys, *_train_args(demo_dir, tiny_models, out), "--overwrite")
    assert code == 0, err
    assert not stray.exists(), "--overwrite replaces the directory whole: nothing of the old run is mixed in"
    assert json.loads((out / "fedrag_output.json").read_text())["kind"] == "train"


def test_outputs_get_the_usual_permissions(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    old = os.umask(0o022)
    try:
        code, _, err = run(
            monkeypatch,
            capsys,
            "index",
            "--corpus",
            demo_dir / "corpus.jsonl",
            "--retriever",
            tiny_models["retriever"],
            "--out",
            tmp_path / "idx",
        )
        assert code == 0, err
        code, _, err = run(monkeypatch, capsys, "demo-data", "--out", tmp_path / "data", "--people", "6")
        assert code == 0, err
    finally:
        os.umask(old)
    assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "idx" / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "data" / "corpus.jsonl").stat().st_mode & 0o777 == 0o644


@pytest.fixture(scope="module")
def adapter_dir(tiny_models, tmp_path_factory):
    from fedrag.generate import Generator

    out = tmp_path_factory.mktemp("adapter") / "generator"
    Generator.load(tiny_models["generator"], lora=True).save(out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "case,message",
    [
        ("truncated adapter weights", "could not load the adapter"),
        ("invalid adapter config", "not a valid peft adapter config"),
        ("adapter based on itself", "names itself"),
        ("invalid retriever meta", "not a valid fedrag retriever file"),
        ("truncated embeddings", "corrupt index"),
    ],
)
def test_corrupt_files_give_one_line(monkeypatch, capsys, tmp_path, demo_dir, tiny_models, adapter_dir, case, message):
    from fedrag.data import load_corpus
    from fedrag.retrieve import KnowledgeStore, Retriever

    gen, ret, index = tiny_models["generator"], tiny_models["retriever"], None
    if "adapter" in case:
        gen = _copy(adapter_dir, tmp_path / "gen")
        if case == "truncated adapter weights":
            weights = gen / "adapter_model.safetensors"
            weights.write_bytes(weights.read_bytes()[:100])
        elif case == "invalid adapter config":
            (gen / "adapter_config.json").write_text("{not json")
        else:
            cfg = json.loads((gen / "adapter_config.json").read_text())
            (gen / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(gen)}))
    elif case == "invalid retriever meta":
        ret = _copy(Path(tiny_models["retriever"]), tmp_path / "ret")
        (ret / "fedrag_retriever.json").write_text("[1, 2")
    else:
        index = tmp_path / "idx"
        KnowledgeStore.build(load_corpus(demo_dir / "corpus.jsonl"), Retriever.load(ret)).save(index)
        emb = index / "embeddings.npy"
        emb.write_bytes(emb.read_bytes()[:200])
    args = [
        "eval",
        "--test",
        demo_dir / "test.jsonl",
        "--retriever",
        ret,
        "--generator",
        gen,
        "--test-limit",
        "1",
        *(["--index", index] if index else ["--corpus", demo_dir / "corpus.jsonl"]),
    ]
    code, _, err = run(monkeypatch, capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


@pytest.mark.slow
def test_nq_open_conversion_is_deterministic_and_drops_empty_passages(tmp_path):
    from fedrag.data.converters import nq_open

    src = tmp_path / "nq.jsonl"
    rows = [
        {
            "question": "who?",
            "answers": ["x"],
            "ctxs": [{"title": "T", "text": "x is here", "hasanswer": True}, {"title": "E", "text": "  "}],
        }
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = "from fedrag.data.converters import nq_open; import sys; print([p.id for p in nq_open(sys.argv[1])[0]])"
    ids = {
        subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }  # two interpreters: two hash seeds
    assert len(ids) == 1
    passages, examples = nq_open(src)
    assert [p.title for p in passages] == ["T"] and examples[0].gold_ids == (passages[0].id,)


def test_quickstart_refuses_a_finished_quickstart_instead_of_reporting_its_old_results(monkeypatch, capsys, tmp_path):
    out = tmp_path / "qs"
    out.mkdir()
    (out / "fedrag_output.json").write_text(json.dumps({"kind": "quickstart"}))
    (out / "summary.json").write_text("[]")
    code, _, err = run(monkeypatch, capsys, "quickstart", "--out", out, "--steps", "2", "--rounds", "1")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "holds a fedrag quickstart output; pass --overwrite" in lines[0], err
    assert sorted(p.name for p in out.iterdir()) == ["fedrag_output.json", "summary.json"]


def test_eval_reports_the_top_k_it_used(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    from fedrag.data import load_corpus

    n = len(load_corpus(demo_dir / "corpus.jsonl"))
    code, _, err = run(
        monkeypatch,
        capsys,
        "eval",
        "--test",
        demo_dir / "test.jsonl",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        "none",
        "--top-k",
        "100000",
        "--test-limit",
        "2",
        "--metrics",
        tmp_path / "m.json",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["top_k"] == n < 100000


@pytest.mark.parametrize(
    "command,options",
    [
        ("train", {"--ralt-mode": "all-in-one", "--two-phase-order": "generator-first", "--scheduler": "linear"}),
        ("federate", {"--engine": "deployment", "--partition": "by-title", "--aggregator": "fedyogi"}),
        ("eval", {"--retrieval": "hybrid", "--decoding": "rag-token"}),
    ],
)
def test_help_lists_the_choices(command, options, monkeypatch):
    import typer.rich_utils
    from typer.testing import CliRunner

    from fedrag.cli.main import app

    # one option a line, its choices on it; typer reads TERMINAL_WIDTH once, when first imported
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 300)
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}, terminal_width=300)
    assert res.exit_code == 0, res.output
    for option, choice in options.items():
        line = next(line for line in res.output.splitlines() if option in line)
        assert choice in line, line


@pytest.mark.slow
def test_python_m_fedrag_lists_every_command():
    from typer.main import get_command_name

    from fedrag.cli.main import app

    names = [c.name or get_command_name(c.callback.__name__) for c in app.registered_commands]
    res = subprocess.run(
        [sys.executable, "-m", "fedrag", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}
    )
    assert res.returncode == 0, res.stderr
    listed = {line.split()[1] for line in res.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert names and set(names) <= listed, (names, listed)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.rglob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.slow
def test_train_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(
    tmp_path, demo_dir, tiny_models, monkeypatch, capsys, warm_cli
):
    """SIGKILL (the OOM killer, a preempted node) after the first checkpoint; the same
    command continues and ends bit-for-bit where an uninterrupted run ends. Contrastive
    trains the tiny BERT with dropout 0.1, so the RNG state must be restored too. The killed
    run is a process of its own (`warm_cli`), the others the CLI in this process."""

    def args(out):
        return [
            "fedrag",
            "train",
            "--stage",
            "contrastive",
            "--steps",
            "6",
            "--batch-size",
            "4",
            "--checkpoint-every",
            "2",
            "--query-only",
            "--corpus",
            str(demo_dir / "corpus.jsonl"),
            "--train",
            str(demo_dir / "train.jsonl"),
            "--retriever",
            tiny_models["retriever"],
            "--out",
            str(out),
        ]

    code, _, err = run(monkeypatch, capsys, *args(tmp_path / "whole")[1:])  # the uninterrupted run
    assert code == 0, err
    out = tmp_path / "cut"
    # dies by SIGKILL right after its first checkpoint (step 2) is on disk, whatever the load
    env = {**warm_cli, "PYTHONUNBUFFERED": "1", "FEDRAG_FAULT": "train-checkpoint:1"}
    cut = subprocess.run(args(out), capture_output=True, text=True, env=env)
    assert cut.returncode == -signal.SIGKILL, cut.stderr
    ckpt = out.with_name(".cut.partial") / "phase0-contrastive" / "checkpoint" / "state.json"
    assert ckpt.exists() and not out.exists(), "killed after its first checkpoint, before it finished"
    assert json.loads(ckpt.read_text())["step"] == 2
    code, _, err = run(monkeypatch, capsys, *args(out)[1:])  # the same command, in this process
    assert code == 0, err
    assert "resuming the interrupted run" in err
    a, b = _weights(tmp_path / "whole" / "retriever"), _weights(out / "retriever")
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch_close(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7)), "each step logged once"
    assert not list(out.glob("phase*/done")), "what only a resume needs is not published"
    cost = json.loads((out / "cost.json").read_text())["total"]
    assert cost["steps"] == 6 and cost["examples"] == 24, "the cost is the whole run's, not the resumed part's"


def torch_close(a, b) -> bool:
    import torch

    return bool(torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7))


def test_another_command_does_not_continue_an_interrupted_run(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    out = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    (partial / "identity.json").write_text(json.dumps({"plan": {"stage": "lsr"}}))
    code, _, err = run(monkeypatch, capsys, *_train_args(demo_dir, tiny_models, out))
    assert code == 2 and "holds an interrupted run of another command" in err and "Traceback" not in err, err
    assert (partial / "identity.json").exists(), "the other run's progress is untouched"
    code, _, err = run(monkeypatch, capsys, *_train_args(demo_dir, tiny_models, out), "--overwrite")
    assert code == 0, err
    assert not partial.exists() and (out / "cost.json").exists()


@pytest.mark.slow
def test_two_processes_cannot_write_one_out(tmp_path, demo_dir, tiny_models, monkeypatch, capsys, warm_cli):
    """The second ``train --out X`` started while the first runs is refused with one line;
    the first finishes and its result is the one in X. The first is held stopped (SIGSTOP)
    while the second tries, so it is certainly still running then, whatever the load. The
    first is a process of its own (`warm_cli`), the second this test's own process."""

    def args(out, steps):
        a = [str(x) for x in _train_args(demo_dir, tiny_models, out)]
        a[a.index("--steps") + 1] = steps
        return a

    out = tmp_path / "run"
    env = {**warm_cli, "PYTHONUNBUFFERED": "1"}
    # the first stops itself (SIGSTOP) after its first step: certainly running, whatever the load
    first = subprocess.Popen(
        ["fedrag", *args(out, "6")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "FEDRAG_FAULT": "train-step:1:STOP"},
    )
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), "the first run stopped itself after its first step"
        try:
            code, _, second_err = run(monkeypatch, capsys, *args(out, "1"))
        finally:
            first.send_signal(signal.SIGCONT)
        f_out, f_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert code == 2 and "being written by another fedrag process" in second_err, second_err
    assert len(message_lines(second_err)) == 1, second_err
    assert first.returncode == 0, f_err
    assert json.loads((out / "cost.json").read_text())["total"]["steps"] == 6


@pytest.mark.slow
def test_a_full_disk_is_one_line_with_exit_1(tmp_path, demo_dir, tiny_models, warm_cli):
    """A tmpfs too small for the trained models: the library's own error type (safetensors'
    SafetensorError) still ends as one line, exit 1, and nothing is published."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode != 0
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        args = [str(a) for a in _train_args(demo_dir, tiny_models, disk / "run")]
        proc = subprocess.run(["fedrag", *args], capture_output=True, text=True, timeout=300, env=warm_cli)
        assert proc.returncode == 1, proc.stderr
        # the store's encoding progress comes first when no earlier test cached its embeddings
        lines = message_lines(proc.stderr)
        assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
        assert not (disk / "run").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)
