"""--report-to as Hugging Face's Trainer has it: TensorBoard, MLflow and W&B (offline) get
every logged step of a `fedrag train` run."""

import pytest

from test_cli import run


def test_train_reports_to_tensorboard_mlflow_and_wandb(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
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
        "tensorboard,mlflow,wandb",
    )
    assert code == 0, err
    phase = next(out.glob("phase0-*"))
    assert list((phase / "tensorboard").glob("events.out.tfevents.*"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    (mlrun,) = client.search_runs([client.get_experiment_by_name("fedrag").experiment_id])
    assert mlrun.info.run_name == "run/ralt" and mlrun.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "loss")] == [1, 2]
    assert mlrun.data.params["lr_generator"] == "0.0003"
    (wandb_run,) = (phase / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("*.wandb")), "the offline W&B run holds its logged history"


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
