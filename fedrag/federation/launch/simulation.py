"""Run a federated task in Flower's Simulation Engine (Ray), all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from fedrag._env import apply_defaults
from fedrag.federation.site.client_app import make_client_app
from fedrag.federation.launch.flower_apps import sites_from_paths
from fedrag.federation.task import FedTask


def simulate(
    task: FedTask,
    site_paths: list[dict[str, str]],
    cpus_per_site: float = 1.0,
    verbose: bool = False,
    gpus_per_site: float = 0.0,
    policy=None,
    plan=None,
    ray_address: str | None = None,
) -> dict:
    """Run `task` over `len(site_paths)` virtual SuperNodes; returns the server's cost summary.
    `gpus_per_site` (e.g. 0.5: two sites share a GPU) goes to Ray's client resources.
    `ray_address`: run the sites on a running Ray cluster (`HOST:PORT` of its head, as
    `ray start --head` prints it) instead of a Ray instance started here; every node of it
    must read the sites' files at the same paths. The address is recorded in cost.json.
    Every simulated site runs in this process, so it loads any model (`policy`
    defaults to [`TRUSTED`][fedrag.federation.site.policy.TRUSTED]). `plan`: any Strategy object
    (e.g. `custom("mine", MyStage(), ...)`), captured in-process, instead of the task's.

    Uses `flwr.simulation.run_simulation` with the apps built in-process (the task is
    captured by them, so it need not pass through `run_config`).
    """
    apply_defaults()
    home = tempfile.mkdtemp(prefix="fedrag-flwr-") if os.environ.get("FLWR_HOME") is None else None
    if home:
        os.environ["FLWR_HOME"] = home
    from fedrag.federation.launch.ray_processes import RayFamily
    from fedrag.federation.server.run_loop import STOP

    STOP.clear()
    ray_family = RayFamily()
    try:
        args = (task, site_paths, cpus_per_site, verbose, gpus_per_site, policy, plan, ray_address)
        with ray_environment_kept():
            return _in_a_thread(
                _simulate, *args, every_2s=ray_family.look, stopping=lambda runtime: _wind_down(ray_family, runtime)
            )
    except BaseException:
        STOP.set()  # the server publishes nothing more while the sites are stopped
        ray_family.stop()  # an interrupt leaves Ray's actors and threads running: they would keep the process alive
        raise
    finally:
        if home:
            os.environ.pop("FLWR_HOME", None)
            shutil.rmtree(home, ignore_errors=True)


# set in this process by a simulation and left after it: PYTHONPATH by Flower's Ray backend (this
# process's whole sys.path, for the actors: every process the caller started afterwards would
# import from there), PYTHONBREAKPOINT by Ray's driver (its debugger, for a `breakpoint()`)
RAY_SETS = ("PYTHONPATH", "PYTHONBREAKPOINT")


@contextlib.contextmanager
def ray_environment_kept():
    """The block with `RAY_SETS` put back as they were (unset where they were) after it."""
    kept = {name: os.environ.get(name) for name in RAY_SETS}
    try:
        yield
    finally:
        for name, value in kept.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wind_down(ray_family, runtime) -> None:
    """An interrupt: the server publishes nothing more, then the sites' actors end and Flower's
    runtime thread `runtime` winds down ([`RayFamily.wind_down`][fedrag.federation.launch.ray_processes.RayFamily.wind_down])."""
    from fedrag.federation.server.run_loop import STOP

    STOP.set()
    ray_family.wind_down(runtime)


def _in_a_thread(fn, *args, every_2s=None, stopping=None):
    """`fn(*args)` on a daemon thread while this (the main) thread waits in short steps: a
    signal handler (Ctrl-C) runs here within a step, wherever the kernel delivered the
    signal. Flower's simulation would hold the main thread in an unbounded join, where
    a signal taken by another thread waits until the run ends. `every_2s()` runs
    between steps every 2 seconds; `stopping(thread)` when a signal ends the wait."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            result["error"] = exc

    worker = threading.Thread(target=target, name="fedrag-simulation", daemon=True)
    worker.start()
    steps = 0
    try:
        while worker.is_alive():
            worker.join(0.2)
            steps += 1
            if every_2s is not None and steps % 10 == 0:
                every_2s()
    except BaseException:
        if stopping is not None:
            stopping(worker)
        raise
    if "error" in result:
        raise result["error"]
    return result["value"]


def _stop_server(threads: list, grace: float = 120.0) -> None:
    """The engine failed: Flower leaves the ServerApp's thread running (waiting for sites
    that will not come, or still loading its models). It is stopped, and joined, so no
    thread of the run outlives the call: it would write to OUT after the failure was
    reported, and a model it loads meanwhile changes torch's process-wide default dtype
    under any other load."""
    from fedrag.federation.server.run_loop import STOP

    STOP.set()
    for thread in threads:
        thread.join(grace)


def _engine_error(exc: BaseException) -> Exception:
    """Flower's "An error was encountered. Ending simulation." as one line naming its first
    cause (Ray failing to start on an overloaded machine, a lost actor); `exc` itself when
    it is already fedrag's."""
    from fedrag.errors import EngineError, FedragError

    if isinstance(exc, FedragError):
        return exc
    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    reason = " ".join(str(root).split()) or type(root).__name__
    return EngineError(f"the Flower simulation failed: {reason}; run the same command again to resume")


def ray_backend(
    cpus_per_site: float = 1.0, gpus_per_site: float = 0.0, verbose: bool = False, ray_address: str | None = None
) -> dict:
    """The `backend_config` fedrag gives `flwr.simulation.run_simulation`: each site's
    share of Ray's resources, and how Ray starts (all on 127.0.0.1, or the cluster at
    `ray_address`)."""
    if ray_address:  # the cluster has its own resources and address: connect, start nothing
        init = {"address": ray_address, "logging_level": "ERROR", "log_to_driver": verbose}
    else:
        init = {
            # "local", not None: Ray would otherwise join the cluster named in RAY_ADDRESS or
            # in /tmp/ray/ray_current_cluster, which outlives a killed `ray start` head
            "address": "local",
            "num_cpus": max(1, os.cpu_count() or 1),
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
            "logging_level": "ERROR",
            # Ray starts its workers at nice 15 (meant for idle pool workers); here the actors
            # are the sites doing the run's work, and at 15 any other busy process starves them
            "_system_config": {"worker_niceness": 0},
            # the sites' actors' own lines ("(ClientAppActor pid=..) WARNING: Manually
            # terminating ClientAppActor" at every end) only with --verbose: a site's
            # failure reaches the server as a message and fedrag reports it in one line
            "log_to_driver": verbose,
        }
    return {"client_resources": {"num_cpus": cpus_per_site, "num_gpus": gpus_per_site}, "init_args": init}


def _simulate(task, site_paths, cpus_per_site, verbose, gpus_per_site, policy, plan, ray_address) -> dict:
    import warnings

    from flwr.simulation import run_simulation

    import logging

    from fedrag.federation.site.policy import TRUSTED

    if not verbose:  # Flower's per-message INFO lines, its warnings (run_simulation's deprecation and
        # fraction_evaluate=0, both fedrag's choices, docs/design.md) and its tracebacks: fedrag prints
        # one line per round, a site's failure in rounds.json, and an engine failure as one line
        logging.getLogger("flwr").setLevel(logging.CRITICAL)

    from fedrag.federation.server.server_app import make_server_app, raise_recorded_error

    client_app = make_client_app(task, sites_from_paths(site_paths), policy or (lambda context: TRUSTED), plan=plan)
    server_threads: list = []
    server_app = make_server_app(task, plan, threads=server_threads)
    backend = ray_backend(cpus_per_site, gpus_per_site, verbose, ray_address)

    import ray._private.auto_init_hook as ray_auto

    auto = ray_auto.enable_auto_connect
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Ray's note that it will stop hiding GPUs from an actor given none: fedrag asks it to
        # go on hiding them (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO in fedrag._env)
        warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
        # a Ray that an interrupt stopped is not started again (with new agents, after
        # fedrag's cleanup) by a site still being scheduled here: Flower starts Ray itself
        ray_auto.enable_auto_connect = False
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=len(site_paths),
                backend_config=backend,
                verbose_logging=verbose,
            )
        except Exception as exc:
            _stop_server(server_threads)
            raise_recorded_error(task)  # the ServerApp's own one-line reason, when it recorded one
            raise _engine_error(exc) from exc
        finally:
            ray_auto.enable_auto_connect = auto
    raise_recorded_error(task)
    cost = Path(task.run.out) / "cost.json"
    if not cost.exists():
        from fedrag.errors import FedragError

        raise FedragError(f"the simulation ended without writing {cost}: run with --verbose for Flower's log")
    import json

    summary = json.loads(cost.read_text())
    summary["ray_address"] = ray_address or "local"
    from fedrag._io import atomic_write_json

    atomic_write_json(cost, summary)
    return summary
