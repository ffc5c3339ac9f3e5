"""The Ray processes a simulation started, followed by PID so an interrupted run stops them
all and nothing else: its actors first, so Flower's runtime winds down and shuts Ray down
from its own thread, then whatever is left.

Why the order: Ray shut down from the main thread while Flower's runtime thread still
schedules sites makes that thread either start a fresh local Ray (whose agents outlive
fedrag) or, with auto-connect off, end the process in Ray's C++ core ("The core worker has
already been shutdown ... The process will exit") with exit code 1 instead of 130."""

from __future__ import annotations

import os
import signal
import time

AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # the raylet's: it ends when they do


class RayFamily:
    """This process's Ray processes, as seen now and during the run (`look`)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[object, str]] = {}  # pid -> (the process, name): a reused pid is another

    def look(self) -> None:
        """Remember the Ray processes below this one now (called every few seconds)."""
        self.seen.update(ray_family())

    def wind_down(self, runtime, wait_s: float = 30.0) -> None:
        """After an interrupt: end the sites' actors (a round in progress stops at once, and
        Flower's runtime gets their failures), then give its thread `runtime` up to `wait_s`
        to end or shut Ray down there. A second Ctrl-C ends the wait."""
        import ray

        self.look()
        for pid, (process, name) in self.seen.items():
            if name not in AGENTS and ray_process(pid) == (process, name):
                _kill(pid)
        end = time.monotonic() + wait_s
        # once Flower's runtime has shut Ray down it only waits for the ServerApp's context (3 s)
        while runtime.is_alive() and ray.is_initialized() and time.monotonic() < end:
            runtime.join(0.2)

    def stop(self) -> None:
        """Shut Ray down if it still runs, then SIGKILL what is left of every Ray process
        seen: its agents outlive a raylet stopped mid-round on a busy machine, and a Ctrl-C
        from a terminal reaches the raylet too, whose agents are then no longer below
        this process."""
        import ray

        started = {**self.seen, **ray_family()}
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            for pid, known in started.items():  # the agents, mostly: Ray's shutdown has ended the rest
                if ray_process(pid) == known:
                    _kill(pid)


def ray_family() -> dict[int, tuple[object, str]]:
    """This process's Ray descendants now: pid -> (the process, name); the process tells
    a reused pid apart."""
    from fedrag.federation.launch.processes import children

    return {pid: known for pid in children(os.getpid()) if (known := ray_process(pid)) is not None}


def ray_process(pid: int) -> tuple[object, str] | None:
    """`(the process, name)` of `pid` if it is a running Ray process (the process equal only to
    itself, not to a later one given its pid), else None (gone, a zombie, whose cmdline is
    empty, or not Ray)."""
    import psutil

    from fedrag.federation.launch.processes import proc_stat

    st = proc_stat(pid)
    if st is None or st.state in "ZX":
        return None
    try:  # argv[0] alone: Ray's title ("ray::IDLE") or its binary's path
        name = next(iter(st.process.cmdline()), "").strip()
    except (psutil.Error, OSError):
        return None
    if not (name.startswith("ray::") or "/ray/" in name):
        return None
    return st.process, name


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
