"""--report-to as Hugging Face's Trainer has it: TensorBoard, MLflow and W&B (offline) get
every logged step of a `fedrag train` run."""

import pytest

from test_cli import run


def _train(monkeypatch, capsys, out, demo_dir, tiny_models, report_to):
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--steps",
        "2",
        "--batch-size",
        "2",
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
        "--report-to",
        report_to,
    )
    assert code == 0, err
    return next(out.glob("phase0-*"))


def test_train_reports_to_tensorboard(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    phase = _train(monkeypatch, capsys, tmp_path / "run", demo_dir, tiny_models, "tensorboard")
    (events,) = (phase / "tensorboard").glob("events.out.tfevents.*")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]
    assert not (phase / "wandb").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow  # MLflow's import and its sqlite store's migrations, W&B's service: ~8 CPU-s
def test_train_reports_to_mlflow_and_wandb(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    phase = _train(monkeypatch, capsys, tmp_path / "run", demo_dir, tiny_models, "mlflow,wandb")
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    (mlrun,) = client.search_runs([client.get_experiment_by_name("fedrag").experiment_id])
    assert mlrun.info.run_name == "run/ralt" and mlrun.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "loss")] == [1, 2]
    assert mlrun.data.params["lr_generator"] == "0.0003"
    (wandb_run,) = (phase / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("*.wandb")), "the offline W&B run holds its logged history"
    assert not (phase / "tensorboard").exists()


@pytest.mark.parametrize("value", ["tensorbord", "mlflow,comet"])
def test_an_unknown_integration_is_one_line_before_anything_loads(monkeypatch, capsys, tmp_path, demo_dir, value):
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--out",
        tmp_path / "r",
        "--report-to",
        value,
    )
    assert code == 2 and "--report-to: unknown integration" in err and not (tmp_path / "r").exists()
