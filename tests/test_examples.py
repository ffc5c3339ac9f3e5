"""Every example runs, on the tiny models, as a user would run it (`python examples/...`), in
the test's process: the libraries are imported already."""

import json
from pathlib import Path

import pytest
from in_process import ONE_ACTOR
from scripts_in_process import run_script

EXAMPLES = Path(__file__).parents[1] / "examples"


def _run(monkeypatch, capsys, script: str, *args) -> dict:
    """`python examples/SCRIPT ARGS`, as a user runs it, in this process (its libraries are imported already)."""
    code, out, err = run_script(monkeypatch, capsys, EXAMPLES / script, *args)
    assert code == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_centralized_example(tiny_models, demo_dir, tmp_path, monkeypatch, capsys):
    out = _run(
        monkeypatch,
        capsys,
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
def test_simulation_example(tiny_models, demo_dir, tmp_path, monkeypatch, capsys):
    out = _run(
        monkeypatch,
        capsys,
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
def test_custom_stage_example(tiny_models, demo_dir, tmp_path, monkeypatch, capsys):
    out = _run(
        monkeypatch,
        capsys,
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
