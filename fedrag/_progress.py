"""Progress of long work on stderr: a bar with rate and ETA on a terminal, one line per
step elsewhere (a log, CI, a pipe), so a build of hours is never silent."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts `total` units of `what`, `done` of them already (a resumed build); the rate
    and ETA count only the work done in this process.

    Args:
        total: units to reach.
        label: what the work is (`encoding`).
        what: the unit's name (`passages`).
        done: units finished before this process started.
        bar: draw a bar (default: when stderr is a terminal); otherwise `update` logs a line.
    """

    def __init__(self, total: int, label: str, what: str = "passages", done: int = 0, bar: bool | None = None):
        self.total, self.label, self.what = total, label, what
        self.done = self.start = done
        self.t0 = time.perf_counter()
        self._bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            rate = TextColumn("{task.fields[rate]}")
            self._bar = Bar(
                TextColumn(label), BarColumn(), MofNCompleteColumn(), rate, TimeRemainingColumn(), console=Console(stderr=True)
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=done, rate="")

    def rate(self) -> float:
        """Units a second in this process."""
        return (self.done - self.start) / max(time.perf_counter() - self.t0, 1e-9)

    def line(self) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        left = _clock(eta) if eta != float("inf") else "?"
        return f"fedrag: {self.label} {self.done}/{self.total} {self.what} ({rate:.1f}/s, ETA {left})"

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.1f} {self.what}/s")
        else:
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
