"""Fault injection at an exact step, for the tests of kills, interrupts and failures.

`FEDRAG_FAULT=POINT:N` makes the process kill itself with SIGKILL (no clean-up, as a
power cut or the OOM killer would) the `N`-th time it passes `POINT`; it does nothing
otherwise. `FEDRAG_FAULT=POINT:N:SIG` sends `SIG` instead (`INT` as Ctrl-C does, `TERM`
as a scheduler does, `STOP` to hold the process still while a test acts on it);
`POINT:N:SIG:group` sends it to the whole process group, as a terminal's Ctrl-C does.
`POINT:N:RAISE` raises [`Crash`][fedrag._faults.Crash] there instead: the work stops at that
step as if its process had died, for a test that runs the work in its own process. Tests set
it on a subprocess (or, for `RAISE`, their own process) instead of racing a timer against the
work. The points:

- `encode-chunk`: a chunk of a store's embeddings was written;
- `train-checkpoint`: `train_stage` saved a resumable checkpoint;
- `train-step`: `train_stage` finished an optimizer step;
- `fed-checkpoint`: the federated server saved its checkpoint (after each round, and at
  the end of each phase).

`FEDRAG_FAULT=memory:N` makes a device too small for more than `N` questions a step:
`--batch-size auto`'s probe runs out of memory above it, on any device.
"""

from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


class Crash(BaseException):
    """`FEDRAG_FAULT=POINT:N:RAISE`: not an `Exception`, so no handler of fedrag's or
    Flower's takes it for an error it reports. `finally` blocks still run (after a kill
    they would not)."""


def checkpoint(point: str) -> None:
    """Count one pass of `point`; signal this process (or raise `Crash`) if `FEDRAG_FAULT`
    names this pass."""
    spec = os.environ.get("FEDRAG_FAULT", "")
    if not spec.startswith(point + ":"):
        return
    _seen[point] = _seen.get(point, 0) + 1
    count, _, how = spec[len(point) + 1 :].partition(":")
    if str(_seen[point]) == count:
        sig, _, whom = how.partition(":")
        if sig == "RAISE":
            _seen.pop(point)  # the next run in this process counts afresh
            raise Crash(f"FEDRAG_FAULT: {spec}")
        signum = getattr(signal, "SIG" + (sig or "KILL"))
        if whom == "group":  # as a terminal's Ctrl-C reaches every process of the foreground group
            os.killpg(os.getpgrp(), signum)
        else:
            os.kill(os.getpid(), signum)


def memory_limit() -> int | None:
    """The questions a step may hold under `FEDRAG_FAULT=memory:N`, else None."""
    spec = os.environ.get("FEDRAG_FAULT", "")
    return int(spec.split(":", 1)[1]) if spec.startswith("memory:") else None
