"""Fault injection at an exact step, for the tests of kills and failures.

`FEDRAG_FAULT=POINT:N` makes the process kill itself with SIGKILL (no clean-up, as a
power cut or the OOM killer would) the `N`-th time it passes `POINT`; it does nothing
otherwise. Tests set it on a subprocess instead of racing a timer against the work.
`FEDRAG_FAULT=memory:N` makes a device too small for more than `N` questions a step:
`--batch-size auto`'s probe runs out of memory above it, on any device.
"""

from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def checkpoint(point: str) -> None:
    """Count one pass of `point`; die here if `FEDRAG_FAULT` names this pass."""
    spec = os.environ.get("FEDRAG_FAULT", "")
    if not spec.startswith(point + ":"):
        return
    _seen[point] = _seen.get(point, 0) + 1
    if str(_seen[point]) == spec.split(":", 1)[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def memory_limit() -> int | None:
    """The questions a step may hold under `FEDRAG_FAULT=memory:N`, else None."""
    spec = os.environ.get("FEDRAG_FAULT", "")
    return int(spec.split(":", 1)[1]) if spec.startswith("memory:") else None
