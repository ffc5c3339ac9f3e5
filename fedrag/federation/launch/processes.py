"""Processes a local deployment starts: free loopback ports, and a process's descendants
(so each is stopped by PID, never by name)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any, NamedTuple

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback port that is free now, drawn outside the kernel's ephemeral range: between
    this call and the server's bind, no port-0 bind or outbound connection (Ray's, another
    test worker's) can be handed it, as one drawn by binding port 0 could. Below 20000 are
    Ray's worker ports."""
    import random

    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    draw = random.SystemRandom()
    for _ in range(200):
        port = draw.randint(20000, max(20001, first - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the band is full: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcStat(NamedTuple):
    """What a process check needs of a running process (from psutil: Linux and macOS alike)."""

    state: str  # "Z" zombie, "X" dead, "T" stopped; "R" otherwise
    ppid: int
    sid: int
    # equal only to the same process (psutil compares pid and start time, the kernel's count since
    # boot on Linux: a clock change leaves it as it was), never to a later one given its pid
    process: Any


_STATES = {"zombie": "Z", "dead": "X", "stopped": "T", "tracing-stop": "T"}


def proc_stat(pid: int) -> ProcStat | None:
    """`pid`'s state, parent, session (-1 where the system does not say: a zombie on macOS)
    and process, or None once it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            state, ppid = _STATES.get(proc.status(), "R"), proc.ppid()
    except (psutil.Error, OSError):
        return None
    try:
        sid = os.getsid(pid)
    except OSError:
        sid = -1
    return ProcStat(state, ppid, sid, proc)


def children(pid: int) -> list[int]:
    """All descendants of `pid`, each after its parent (stop them in reverse: deepest first).
    Every process's parent is read on its own: one that cannot be read (another user's, under
    Linux's `hidepid`) is passed over, where psutil's `Process.children` gives up on all."""
    import psutil

    kids: dict[int, list[int]] = {}
    try:
        for proc in psutil.process_iter(["ppid"], ad_value=None):
            if proc.info["ppid"] is not None:
                kids.setdefault(proc.info["ppid"], []).append(proc.pid)
    except (psutil.Error, OSError):
        return []
    out, todo, seen = [], [pid], {pid}
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in seen:  # a pid reused while the table was read can close a loop
                seen.add(child)
                out.append(child)
                todo.append(child)
    return out
