"""The GPU check's CPU dry run: the script that is run when a GPU is lent works end to end
on tiny models, so a GPU window is spent measuring, not debugging."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_runs_on_cpu(tmp_path):
    out = tmp_path / "dry.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--sizes", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(out.read_text())
    runs = [r["run"] for r in report["rows"]]
    for w in ("float32", "bfloat16"):
        for what in ("ralt", "rag-token", "rag-sequence eval"):
            assert f"tiny {w} weights, {what}" in runs
    trained = [r for r in report["rows"] if r["decreased"] is not None]
    assert trained and all(r["finite"] and r["decreased"] and r["s_per_step"] > 0 and r["peak_mb"] > 0 for r in trained)
    assert report["meta"]["device"] == "cpu" and "all finite and decreasing" in res.stdout


@pytest.mark.slow
def test_the_gpu_cli_check_dry_runs_on_cpu(tmp_path):
    """Every CLI step of the GPU check but the 4-bit one (bitsandbytes needs CUDA)."""
    res = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_cli_check.sh"), "cpu", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    done = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("ok ")]
    assert done == ["models", "data", "train-bf16", "eval-bf16", "joint-token", "index", "eval-device-map"]
    assert json.loads((tmp_path / "out" / "eval-bf16.json").read_text())["n"] == 8
    assert "all steps passed on cpu" in res.stdout
