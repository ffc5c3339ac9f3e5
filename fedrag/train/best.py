"""Keep the best validated weights of a run (`TrainConfig.keep_best`), as Hugging Face's
Trainer does with `load_best_model_at_end`: the trainable tensors are validated before the
first step and every `eval_every` steps, and the run ends with the best of them, so a run
asked to keep its best cannot end worse on validation than it started."""

from __future__ import annotations

import json
from pathlib import Path

from fedrag._io import atomic_dir
from fedrag.train.state import get_state, set_state


def selected_metric(metrics: dict, metric: str) -> str:
    """The validation figure `metric` names; `auto`: F1 when the generator answered, else
    Recall@5 (answer-recall@5 without gold ids)."""
    if metric == "auto":
        return "f1" if "f1" in metrics else ("recall@5" if "recall@5" in metrics else "answer_recall@5")
    return metric


def selected_value(metrics: dict, metric: str) -> float:
    """The figure `metric` names in validation `metrics` (see `selected_metric`)."""
    metric = selected_metric(metrics, metric)
    if metric not in metrics:
        from fedrag.errors import FedragError

        raise FedragError(f"--best-metric {metric}: validation reports only {', '.join(sorted(metrics))}")
    return float(metrics[metric])


class BestKeeper:
    """The best validated state of the trainable tensors so far (ties keep the earlier one),
    mirrored to `out/best` when the run has an output directory, so a resumed run keeps it."""

    def __init__(self, metric: str, trains: tuple[str, ...], out: Path | None):
        self.metric, self.trains, self.dir = metric, trains, (out / "best" if out else None)
        self.step: int | None = None
        self.value = float("-inf")
        self.selected = metric  # the figure `auto` stands for, once a validation has run
        self.state: dict | None = None

    def offer(self, rag, step: int, metrics: dict) -> None:
        """Keep the current tensors if their validation beats the best so far."""
        value = selected_value(metrics, self.metric)
        self.selected = selected_metric(metrics, self.metric)
        if value > self.value:
            self.step, self.value = step, value
            self.state = {n: t.detach().clone() for n, t in get_state(rag, self.trains).items()}
            if self.dir is not None:
                from safetensors.torch import save_file

                with atomic_dir(self.dir) as tmp:
                    save_file({n: t.contiguous() for n, t in self.state.items()}, str(tmp / "trainable.safetensors"))
                    (tmp / "best.json").write_text(json.dumps({"step": step, "value": value}))

    def load(self, found: Path) -> None:
        """Take the best state an interrupted run saved (none saved: nothing to take)."""
        path = found / "best"
        if (path / "best.json").is_file():
            from safetensors.torch import load_file

            meta = json.loads((path / "best.json").read_text())
            self.step, self.value = int(meta["step"]), float(meta["value"])
            self.state = load_file(str(path / "trainable.safetensors"))

    def restore(self, rag, final_step: int) -> dict:
        """Put the best tensors back into `rag`; returns what was kept (`step`, `metric`, `value`)."""
        if self.state is not None and self.step != final_step:
            set_state(rag, self.state)
        return {"step": self.step, "metric": self.selected, "value": self.value}
