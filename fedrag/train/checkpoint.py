"""A stage's checkpoint: trainable tensors, optimizer, scheduler and random streams, so an
interrupted run continues where it stopped; and AdamW's moments as named tensors, which a
federated site carries from one round to the next."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from fedrag import _faults
from fedrag._io import atomic_dir
from fedrag.train.cost import Cost
from fedrag.train.state import get_state, set_state


_MOMENTS = ("exp_avg", "exp_avg_sq", "step")


def export_optimizer_state(opt, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter moments as flat named CPU tensors (`<param>::exp_avg` ...)."""
    out = {}
    for name, p in params.items():
        for key, value in opt.state.get(p, {}).items():
            if key in _MOMENTS:
                out[f"{name}::{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return out


def import_optimizer_state(opt, params: dict[str, torch.nn.Parameter], state: dict[str, torch.Tensor]) -> None:
    """Load moments saved by [`export_optimizer_state`][export_optimizer_state]; parameters it lacks start fresh."""
    for name, p in params.items():
        found = {key: state[f"{name}::{key}"] for key in _MOMENTS if f"{name}::{key}" in state}
        if len(found) == len(_MOMENTS):
            opt.state[p] = {
                k: (v.to(torch.float32) if k == "step" else v.to(p.device, p.dtype)).clone() for k, v in found.items()
            }


def save_checkpoint(path: Path, rag, trains, opt, sched, step: int, cost: dict | None = None, scaler=None) -> None:
    """Trainable tensors as safetensors + optimizer/scheduler state (and float16's loss
    scaler, when `scaler` is an enabled `GradScaler`), written atomically."""
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        save_file({n: t.contiguous() for n, t in get_state(rag, trains).items()}, str(tmp / "trainable.safetensors"))
        device = next((p.device for p in opt.param_groups[0]["params"]), torch.device("cpu"))
        torch.save(
            {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                # float16: the loss scale and its growth count, else a resumed run starts over at 2**16
                **({"scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}),
                "torch_rng": torch.get_rng_state(),
                # the training device's stream only: other GPUs are not touched (nor required on resume)
                **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            },
            tmp / "optimizer.pt",
        )
        np_state = np.random.get_state()
        (tmp / "state.json").write_text(
            json.dumps(
                {
                    "step": step,
                    "trains": list(trains),
                    "cost": cost,
                    "python_rng": _jsonable(random.getstate()),
                    "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                }
            )
        )
    _faults.checkpoint("train-checkpoint")


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_checkpoint(out: Path, rag, opt, sched, scaler=None) -> tuple[int, Cost | None]:
    """Load `out/checkpoint` into the model, optimizer, scheduler, float16's loss `scaler`
    (a checkpoint saved without one leaves it as it is) and random streams; returns its
    step and the cost up to it (`(0, None)` without a checkpoint)."""
    ckpt = out / "checkpoint"
    if not (ckpt / "state.json").exists():
        return 0, None
    from safetensors.torch import load_file

    from fedrag.errors import FedragError

    try:
        meta = json.loads((ckpt / "state.json").read_text())
        step = int(meta["step"])
        set_state(rag, load_file(str(ckpt / "trainable.safetensors")))
        states = torch.load(ckpt / "optimizer.pt", weights_only=True)
        opt.load_state_dict(states["optimizer"])
        sched.load_state_dict(states["scheduler"])
        if scaler is not None and scaler.is_enabled() and "scaler" in states:
            scaler.load_state_dict(states["scaler"])
        # the random streams where the checkpoint left them: dropout then masks as it would have
        if "torch_rng" in states:
            torch.set_rng_state(states["torch_rng"])
        device = next((p.device for g in opt.param_groups for p in g["params"]), torch.device("cpu"))
        if "cuda_rng" in states and device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda_rng"], device)
        if "python_rng" in meta:
            random.setstate(_tuples(meta["python_rng"]))
        if "numpy_rng" in meta:
            kind, keys, *rest = meta["numpy_rng"]
            np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise FedragError(
            f"{ckpt}: corrupt checkpoint ({type(exc).__name__}: {str(exc)[:200]}); delete it to start over"
        ) from None
    return step, (Cost(**meta["cost"]) if meta.get("cost") else None)
