"""The fault hook the kill and interrupt tests rely on fires at the named pass, with the
named signal, to the named target, and nowhere else."""

import os
import signal
import subprocess
import sys

import pytest

# SIGINT's default action, even where the test process ignores it (an xdist worker does)
PASSES = (
    "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "from fedrag import _faults\nfor i in range(3):\n    _faults.checkpoint('p')\n    print(i, flush=True)\n"
)


def _run(spec: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEDRAG_FAULT": spec}
    return subprocess.run([sys.executable, "-c", PASSES], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    "spec,code,printed",
    [
        ("p:2", -signal.SIGKILL, "0\n"),  # dies in the second pass, before printing 1
        ("p:1:TERM", -signal.SIGTERM, ""),
        ("p:3:INT", -signal.SIGINT, "0\n1\n"),  # uncaught KeyboardInterrupt: Python dies by SIGINT
        ("p:4", 0, "0\n1\n2\n"),  # a pass that never comes
        ("q:1", 0, "0\n1\n2\n"),  # another point
        ("", 0, "0\n1\n2\n"),
    ],
)
def test_a_fault_fires_at_its_pass_with_its_signal(spec, code, printed):
    res = _run(spec)
    assert (res.returncode, res.stdout) == (code, printed), res.stderr


def test_a_group_fault_reaches_the_whole_process_group():
    """`:group` signals every process of the group (a child here), as a terminal's Ctrl-C."""
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "import signal; signal.signal(signal.SIGTERM, lambda *a: None)\n"
        "from fedrag import _faults\n"
        "_faults.checkpoint('p')\n"
        "print(child.wait(), flush=True)\n"
    )
    env = {**os.environ, "FEDRAG_FAULT": "p:1:TERM:group"}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, start_new_session=True
    )
    pid, child_code = res.stdout.split()
    assert res.returncode == 0 and int(child_code) == -signal.SIGTERM, res.stderr


def test_a_raise_fault_stops_the_work_in_this_process_at_its_pass_and_counts_afresh(monkeypatch):
    """`:RAISE` raises `Crash` (no `Exception` handler takes it) at the named pass; the next
    run in the same process counts its passes from 1 again."""
    from fedrag import _faults

    monkeypatch.setenv("FEDRAG_FAULT", "p:2:RAISE")
    for _ in range(2):  # the same process, twice
        done = []
        with pytest.raises(_faults.Crash):
            try:
                for i in range(3):
                    _faults.checkpoint("p")
                    done.append(i)
            except Exception:  # noqa: BLE001 - what a handler of errors would do: it must not take the crash
                pytest.fail("Crash is not an Exception")
        assert done == [0]
