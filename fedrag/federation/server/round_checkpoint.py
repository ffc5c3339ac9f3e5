"""The server's checkpoint: the global trainable tensors (safetensors), the phase and
round reached, the round history, the task it belongs to and the DP accountant's
ledger, written atomically after every round so a killed server resumes with no round
lost and no budget forgotten."""

from __future__ import annotations

import json
from pathlib import Path

from fedrag import _faults
from fedrag._io import atomic_dir
from fedrag._settings import names
from fedrag.federation.task import FedTask

CKPT = "checkpoint"


# where and how the run is watched, not what it computes: the task's settings declared `identity=False`
RUN_KEYS_IGNORED = names(FedTask, identity=False)


def run_identity(task: FedTask) -> dict:
    """The task settings a checkpoint belongs to (a resume must match them)."""
    ignored = names(type(task), identity=False)
    return {k: v for k, v in task.to_config().items() if k not in ignored}


def save_checkpoint(out: Path, rag, phase: int, rounds_done: int, history: list, task: FedTask, accountant=None) -> None:
    from safetensors.torch import save_file

    from fedrag.train import get_state

    with atomic_dir(out / CKPT) as tmp:
        save_file(
            {
                n: t.contiguous()
                for n, t in get_state(rag, ("retriever", "generator") if rag.generator else ("retriever",)).items()
            },
            str(tmp / "global.safetensors"),
        )
        (tmp / "state.json").write_text(
            json.dumps(
                {
                    "phase": phase,
                    "rounds_done": rounds_done,
                    "history": history,
                    "task": run_identity(task),
                    "dp_accountant": accountant.state_dict() if accountant else None,
                }
            )
        )
    _faults.checkpoint("fed-checkpoint")


def read_checkpoint(out: Path, task: FedTask, phases: int) -> dict | None:
    """The checkpoint's state (`phase`, `rounds_done`, `history`, `dp_accountant`),
    None when OUT has none; refuses (one line) a corrupt one, one of another task, or one
    of a run that already finished. Launchers call it before starting anything."""
    from fedrag.errors import FedragError

    state = Path(out) / CKPT / "state.json"
    if not state.exists():
        return None
    try:
        s = json.loads(state.read_text())
        s.update(phase=int(s["phase"]), rounds_done=int(s["rounds_done"]), history=list(s["history"]))
        from safetensors import safe_open

        with safe_open(str(Path(out) / CKPT / "global.safetensors"), "pt") as weights:  # the header covers the file
            weights.keys()
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise FedragError(
            f"{Path(out) / CKPT}: corrupt checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
            "delete it (or pass --overwrite) to start over"
        ) from None
    mine, saved = run_identity(task), s.get("task")
    if saved != mine:
        diff = sorted(k for k in set(mine) | set(saved or {}) if (saved or {}).get(k) != mine.get(k))
        raise FedragError(
            f"{out} holds a checkpoint of another federated task (differs in {', '.join(diff[:4]) or 'format'}); "
            "pass --overwrite to start over, or choose another --out"
        )
    if s["phase"] >= phases:
        raise FedragError(f"{out} already holds a finished federated run of this task; pass --overwrite to run it again")
    return s


def load_checkpoint(out: Path, rag, task: FedTask, phases: int) -> tuple[int, int, list, dict | None]:
    """Resume point `(phase, rounds done, history, DP accountant state)` with the global
    tensors loaded into `rag`; (0, 0, [], None) without a checkpoint."""
    from safetensors.torch import load_file

    from fedrag.errors import FedragError
    from fedrag.train import set_state

    s = read_checkpoint(out, task, phases)
    if s is None:
        return 0, 0, [], None
    try:
        set_state(rag, load_file(str(out / CKPT / "global.safetensors")))
    except Exception as exc:  # noqa: BLE001
        raise FedragError(
            f"{out / CKPT}: corrupt checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
            "delete it (or pass --overwrite) to start over"
        ) from None
    return s["phase"], s["rounds_done"], s["history"], s.get("dp_accountant")
