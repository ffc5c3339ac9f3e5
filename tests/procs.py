"""Which processes a test saw still run: by pid and process (psutil's: pid and start time), so
a pid the kernel hands to a later process is not taken for the one seen."""

from __future__ import annotations

from pathlib import Path

from fedrag.federation.launch.processes import proc_stat


def running(pids) -> dict[int, object]:
    """pid -> process of each of `pids` running now (zombies have ended): a process, not
    a number the kernel hands to another once it is gone."""
    return {pid: st.process for pid in pids if (st := proc_stat(pid)) and st.state not in "ZX"}


def cmdline(pid: int) -> str:
    """`pid`'s command line, arguments joined by spaces; "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
