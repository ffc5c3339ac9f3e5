"""Fault injection at an exact step, for the tests of kills and failures.

`FEDRAG_FAULT=POINT:N` makes the process kill itself with SIGKILL (no clean-up, as a
power cut or the OOM killer would) the `N`-th time it passes `POINT`; it does nothing
otherwise. Tests set it on a subprocess instead of racing a timer against the work.
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
