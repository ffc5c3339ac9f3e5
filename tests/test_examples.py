"""Every example runs, on the tiny models, as a user would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from in_process import ONE_ACTOR

EXAMPLES = Path(__file__).parents[1] / "examples"


def _run(script: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True, env=env, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the example script in its own process (~10 s)
def test_centralized_example(tiny_models, demo_dir, tmp_path):
    out = _run(
        "centralized/train.py",
        "--data",
        demo_dir,
        "--strategy",
        "joint-token",
        "--steps",
        "1",
        "--test-limit",
        "2",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "c",
    )
    assert out["decoding"] == "rag-token" and (tmp_path / "c" / "generator" / "fedrag_decoding.json").exists()


@pytest.mark.slow
def test_simulation_example(tiny_models, demo_dir, tmp_path):
    out = _run(
        "simulation/simulate.py",
        "--data",
        demo_dir,
        "--strategy",
        "independent",
        "--rounds",
        "1",
        "--local-steps",
        "1",
        "--cpus-per-site",  # one Ray actor serves both sites: a second would import and load the same again
        ONE_ACTOR,
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "s",
    )
    assert out["rounds"] == 2 and (tmp_path / "s" / "model" / "retriever").exists()


@pytest.mark.slow
def test_custom_stage_example(tiny_models, demo_dir, tmp_path):
    out = _run(
        "custom_stage/custom_stage.py",
        "--data",
        demo_dir,
        "--steps",
        "2",
        "--cpus-per-site",
        ONE_ACTOR,
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "x",
    )
    assert out["federated_rounds"] == 2 and len(out["central_loss"]) == 2
    rounds = json.loads((tmp_path / "x" / "federated" / "rounds.json").read_text())
    assert [r["stage"] for r in rounds] == ["per-question-ralt", "contrastive"]
