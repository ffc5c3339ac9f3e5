"""`--batch-size auto`: the probe's search against a memory limit set at an exact batch
(`FEDRAG_FAULT=memory:N`), the CPU default, and where the chosen batch is recorded."""

import json
import sys

import pytest

from fedrag.data import load_qa
from fedrag.errors import FedragError


@pytest.fixture(scope="module")
def rag(tiny_models, demo_dir):
    from fedrag.pipeline import build_training_rag

    return build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], True, 2)


@pytest.fixture(scope="module")
def train(demo_dir):
    return load_qa(demo_dir / "train.jsonl")


def _train(rag, train, stage, options=None, **cfg):
    from fedrag.train import TrainConfig, make_stage, train_stage

    return train_stage(make_stage(stage, top_k=2, **(options or {})), rag, train, TrainConfig(steps=1, **cfg))


@pytest.mark.parametrize("limit,expected", [(37, 36), (9, 9), (1, 1)])
def test_auto_finds_the_largest_batch_the_memory_holds_less_a_margin(rag, train, monkeypatch, limit, expected):
    """Memory for `limit` questions a step: doubling 1, 2, 4, ... then bisecting finds `limit`
    itself (to within 1/32), and 1/20 of it is left free (none below 20): 37 -> 36, 9 -> 9."""
    assert len(train) >= 64
    monkeypatch.setenv("FEDRAG_FAULT", f"memory:{limit}")
    res = _train(rag, train, "ralt", batch_size="auto")
    assert res.cost.batch_size == expected
    assert 0.9 * limit <= expected <= limit


def test_auto_fails_in_one_line_when_not_one_question_fits(rag, train, monkeypatch):
    monkeypatch.setenv("FEDRAG_FAULT", "memory:0")
    with pytest.raises(FedragError, match="not even one question"):
        _train(rag, train, "ralt", batch_size="auto")


def test_auto_on_cpu_is_the_stages_default_batch(rag, train):
    assert _train(rag, train, "ralt", batch_size="auto").cost.batch_size == 4  # TrainConfig's default
    assert (
        _train(rag, train, "contrastive", {"train_passages": False}, batch_size="auto").cost.batch_size == 16
    )  # the stage's own
    assert _train(rag, train, "ralt", batch_size=3).cost.batch_size == 3


def test_the_whole_training_set_needs_no_margin(rag, train, monkeypatch):
    monkeypatch.setenv("FEDRAG_FAULT", "memory:1000")
    assert _train(rag, train[:20], "ralt", batch_size="auto").cost.batch_size == 20


def test_eval_auto_probes_answers_and_reports_the_batch(rag, demo_dir, monkeypatch):
    from fedrag.evaluate import evaluate

    test = load_qa(demo_dir / "test.jsonl")[:12]
    assert evaluate(rag, test, batch_size="auto", progress=False)["batch_size"] == 8  # CPU
    monkeypatch.setenv("FEDRAG_FAULT", "memory:5")
    assert evaluate(rag, test, batch_size="auto", progress=False)["batch_size"] == 5


def test_the_setting_parses_travels_and_refuses_what_it_cannot_mean(monkeypatch, capsys, tmp_path, demo_dir):
    from fedrag.cli.main import main
    from fedrag.federation.task import FedTask
    from fedrag.train import TrainConfig

    task = FedTask.from_config({**FedTask(stage="ralt").to_config(), "batch-size": "auto"})
    assert task.training.batch_size == "auto" and task.train_config().batch_size == "auto"
    with pytest.raises(FedragError, match="fixed --batch-size"):
        FedTask(stage="ralt", batch_size="auto", secagg=True, min_sites=2)
    for bad in ("big", 0, 2.5, True):
        with pytest.raises(FedragError, match="--batch-size"):
            TrainConfig(batch_size=bad)
    for bad in ("big", "0"):
        monkeypatch.setattr(sys, "argv", ["fedrag", "eval", "--test", str(demo_dir / "test.jsonl"), "--batch-size", bad])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "--batch-size" in err and "Traceback" not in err


def test_train_records_the_chosen_batch_in_cost_json(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    from fedrag.cli.main import main

    args = ["train", "--stage", "ralt", "--corpus", demo_dir / "corpus.jsonl", "--train", demo_dir / "train.jsonl"]
    args += ["--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"], "--steps", "1"]
    monkeypatch.setenv("FEDRAG_FAULT", "memory:6")
    monkeypatch.setattr(sys, "argv", ["fedrag", *map(str, args), "--batch-size", "auto", "--out", str(tmp_path / "run")])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    cost = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert [s["batch_size"] for s in cost["stages"]] == [6] and cost["config"]["batch_size"] == "auto"
