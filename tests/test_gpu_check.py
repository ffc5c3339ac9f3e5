"""The GPU check's CPU dry run: the script that is run when a GPU is lent works end to end
on tiny models, so a GPU window is spent measuring, not debugging."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from scripts_in_process import run_script

ROOT = Path(__file__).resolve().parents[1]


def _script(monkeypatch, capsys, name: str, *args) -> tuple[int, str]:
    """`python benchmarks/NAME ARGS` as `gpu_run.sh` runs it, in this process: its exit status
    and output. What it puts in the temporary directory (models, a corpus, a store: on a GPU
    machine, gigabytes) is gone when it ends."""
    tmp = Path(args[args.index("--out") + 1]).parent / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))  # and the processes it starts
    code, out, err = run_script(monkeypatch, capsys, ROOT / "benchmarks" / name, *args)
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))  # torch.compile's own cache
    assert code != 0 or not left, f"{name} left {left} in its temporary directory"  # a failure shows its own output
    return code, out + err


@pytest.mark.slow
def test_the_gpu_check_dry_runs_on_cpu(tmp_path, monkeypatch, capsys):
    out = tmp_path / "dry.json"
    code, printed = _script(monkeypatch, capsys, "gpu_check.py", "--device", "cpu", "--sizes", "tiny", "--out", out)
    assert code == 0, printed[-4000:]
    report = json.loads(out.read_text())
    runs = [r["run"] for r in report["rows"]]
    for w in ("float32", "bfloat16"):
        for what in ("ralt", "rag-token", "rag-sequence eval"):
            assert f"tiny {w} weights, {what}" in runs
    trained = [r for r in report["rows"] if r["decreased"] is not None]
    assert trained and all(r["finite"] and r["decreased"] and r["s_per_step"] > 0 and r["peak_mb"] > 0 for r in trained)
    assert report["meta"]["device"] == "cpu" and "all finite and decreasing" in printed


@pytest.mark.slow
def test_the_gpu_cli_check_dry_runs_on_cpu(tmp_path, warm_cli):
    """Every CLI step of the GPU check but the 4-bit one (bitsandbytes needs CUDA); each
    fedrag command a process forked from one that has imported the libraries."""
    res = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_cli_check.sh"), "cpu", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**warm_cli, "PYTHON": sys.executable, "FEDRAG": "fedrag"},
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    done = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("ok ")]
    assert done == ["models", "data", "train-bf16", "eval-bf16", "joint-token", "index", "eval-device-map"]
    assert json.loads((tmp_path / "out" / "eval-bf16.json").read_text())["n"] == 8
    assert "all steps passed on cpu" in res.stdout


@pytest.mark.slow
def test_the_gpu_step_speed_benchmark_dry_runs_on_cpu(tmp_path, monkeypatch, capsys):
    """fedrag vs plain transformers + peft, step and decoding rows for every stage, on tiny shapes."""
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--sizes", "tiny", "--auto-sizes", "tiny", "--steps", "2", "--warmup", "1", "--batch-size", "4"]
    args += ["--passage-words", "20", "--top-k", "2"]  # bf16 on this CPU is emulated: 100-word passages, top 5 took ~35 CPU-s
    monkeypatch.setenv("FEDRAG_FAULT", "memory:6")  # the probe's limit: a device that holds 6 questions
    code, printed = _script(monkeypatch, capsys, "gpu_step_speed.py", *args, "--eval-questions", "4", "--out", out)
    assert code == 0, printed[-4000:]
    report = json.loads(out.read_text())
    rows = {(r["stage"], r["who"]): r for r in report["train"]}
    assert set(rows) == {(s, w) for s in ("ralt", "rag-sequence", "rag-token") for w in ("fedrag", "plain")}
    for stage in ("ralt", "rag-sequence", "rag-token"):
        mine, plain = rows[(stage, "fedrag")], rows[(stage, "plain")]
        assert mine["tokens_per_step"] == plain["tokens_per_step"] > 0, "both sides train on the same tokens"
        assert mine["vs_plain"] == mine["median_s"] / plain["median_s"] and mine["min_s"] <= mine["median_s"] <= mine["max_s"]
    assert [r["decoding"] for r in report["decode"]] == ["concat", "rag-sequence", "rag-token"]
    assert report["meta"]["device"] == "cpu" and report["meta"]["peak_bf16_tflops"] is None
    (auto,) = report["auto"]
    assert (auto["chosen"], auto["chosen_runs"], auto["over"]) == (6, True, 7)


@pytest.mark.slow
def test_the_gpu_store_benchmark_dry_runs_on_cpu(tmp_path, monkeypatch, capsys):
    """The 10^6-passage GPU store build, at 1,000 passages and a tiny encoder on CPU (the
    build itself is `fedrag index` in a process of its own, as the benchmark measures it)."""
    out = tmp_path / "store.json"
    code, printed = _script(
        monkeypatch, capsys, "gpu_store_scale.py", "--device", "cpu", "--passages", "1000", "--shape", "tiny", "--out", out
    )
    assert code == 0, printed[-4000:]
    row = json.loads(out.read_text())
    assert row["passages"] == 1000 and row["index"] == "hnsw" and 20 <= row["mean_words"] <= 150
    assert row["recall_vs_exact"]["k"] == 5 and 0 < row["search_p50_ms"] <= row["search_p99_ms"]
    assert row["log_tail"][-1].startswith("fedrag: encoding 1000/1000 passages")
