"""Processes a local deployment starts: free loopback ports, and a process's descendants
(so each is stopped by PID, never by name)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import NamedTuple

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
    """The fields of ``/proc/PID/stat`` a process check needs."""

    state: str  # "Z" zombie, "X" dead, "T" stopped
    ppid: int
    sid: int
    start: int  # clock ticks after boot: tells a process from a later one given its pid


def proc_stat(pid: int) -> ProcStat | None:
    """`pid`'s state, parent, session and start time, or None once it is gone."""
    try:  # after "pid (comm)": comm may hold spaces or ")"
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ProcStat(rest[0], int(rest[1]), int(rest[3]), int(rest[19]))
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """All descendants of `pid` (from /proc), deepest last."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := proc_stat(int(entry.name))):
            kids.setdefault(st.ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
