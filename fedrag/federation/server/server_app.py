"""The ServerApp: runs a strategy's phases as consecutive federated phases.

Per phase: the stage's trainable tensors are sent, sites train one round each, the
aggregator (FedAvg / FedProx / FedAdam / FedYogi, optionally wrapped in Flower's
central DP) combines them. After each round the global tensors are checkpointed
atomically (safetensors) so a killed server resumes with no round lost. The phases and
rounds themselves are [`ServerRun`][fedrag.federation.server.run_loop.ServerRun]'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedrag._io import atomic_write_json
from fedrag.federation.server.run_loop import ServerRun
from fedrag.federation.task import FedTask

ERROR_FILE = "error.json"


def raise_recorded_error(task: FedTask) -> None:
    """Raise the ServerApp's failure (written to OUT/error.json) in the launching process."""
    from fedrag.errors import FedragError

    path = Path(task.run.out) / ERROR_FILE
    if path.is_file():
        raise FedragError(json.loads(path.read_text())["error"])


def run_server(grid, task: FedTask, plan=None) -> dict:
    """[`serve`][serve], with a failure recorded in `OUT/error.json` for the launcher
    (the ServerApp runs in another thread or process than the CLI)."""
    from fedrag.errors import FedragError

    out = Path(task.run.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)
    try:
        return serve(grid, task, plan)
    except FedragError as exc:
        atomic_write_json(out / ERROR_FILE, {"error": str(exc)})
        raise


def serve(grid, task: FedTask, plan=None) -> dict:
    """The ServerApp body: every phase of `plan` (default the task's), every round,
    checkpoints, rounds.json, final models ([`ServerRun`][fedrag.federation.server.run_loop.ServerRun])."""
    return ServerRun(grid, task, plan or task.plan()).run()


def make_server_app(task: FedTask | None = None, plan=None, threads: list | None = None):
    """A Flower ServerApp; `task=None` reads the task from `context.run_config`;
    `plan`: a Strategy object to run instead of the task's; `threads`: the thread that runs
    the app's body is appended to it, so a launcher in the same process can join it."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        if threads is not None:
            import threading

            threads.append(threading.current_thread())
        run_server(grid, task or FedTask.from_config(context.run_config), plan)

    return app
