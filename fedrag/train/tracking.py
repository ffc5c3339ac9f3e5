"""Experiment tracking as Hugging Face's Trainer does it: `report_to` names the
integrations (`"tensorboard,mlflow,wandb"`, `"all"` or `"none"`), and each is
configured by its own environment variables, exactly as with the Trainer:

* **tensorboard**: event files in `<run dir>/tensorboard`.
* **mlflow**: `MLFLOW_TRACKING_URI` (MLflow's default when unset) and
  `MLFLOW_EXPERIMENT_NAME` (default `fedrag`).
* **wandb**: `WANDB_PROJECT` (default `fedrag`), `WANDB_MODE=offline` to log without
  an account; files under `<run dir>/wandb`.

The integrations come with the `tracking` extra (`pip install 'fedrag[tracking]'`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fedrag._env import require
from fedrag.errors import FedragError

INTEGRATIONS = ("tensorboard", "mlflow", "wandb")


def parse_report_to(value: str) -> tuple[str, ...]:
    """`"tensorboard,mlflow"` -> `("tensorboard", "mlflow")`; `all`; `none` -> ()."""
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if names in ([], ["none"]):
        return ()
    if names == ["all"]:
        return INTEGRATIONS
    bad = [n for n in names if n not in INTEGRATIONS]
    if bad:
        raise FedragError(f"--report-to: unknown integration '{bad[0]}' (choose from none, all, {', '.join(INTEGRATIONS)})")
    return tuple(dict.fromkeys(names))


class Tracker:
    """One tracked run: `log(metrics, step)` sends every numeric value to each
    integration; `close()` ends the run. Use as a context manager."""

    def __init__(self, report_to: str, run_dir: str | os.PathLike, run_name: str, config: dict | None = None):
        self.names = parse_report_to(report_to)
        self.run_dir = Path(run_dir)
        self._tb = self._mlflow = self._wandb = None
        params = {k: v for k, v in (config or {}).items() if isinstance(v, (int, float, str, bool))}
        if "tensorboard" in self.names:
            require("tensorboard", "fedrag[tracking]")
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if "mlflow" in self.names:  # a client of its own: no global "active run" to collide with
            require("mlflow", "fedrag[tracking]")
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fedrag")
            exp = client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else client.create_experiment(name)
            self._mlflow = (client, client.create_run(exp_id, run_name=run_name).info.run_id)
            if params:
                client.log_batch(self._mlflow[1], params=[Param(k, str(v)[:500]) for k, v in params.items()])
        if "wandb" in self.names:
            wandb = require("wandb", "fedrag[tracking]")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "fedrag"),
                name=run_name,
                dir=str(self.run_dir),
                config=params,
                reinit="create_new",
            )

    def __bool__(self) -> bool:
        return bool(self.names)

    def log(self, metrics: dict, step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not values:
            return
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._mlflow is not None:
            import time

            from mlflow.entities import Metric

            client, run_id = self._mlflow
            now = int(time.time() * 1000)  # MLflow's metric names allow no "@"
            client.log_batch(run_id, metrics=[Metric(k.replace("@", "_at_"), v, now, step) for k, v in values.items()])
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None:
            client, run_id = self._mlflow
            client.set_terminated(run_id)
        if self._wandb is not None:
            self._wandb.finish()
        self._tb = self._mlflow = self._wandb = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
