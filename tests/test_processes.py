"""What fedrag knows of processes (the ones it stops by PID, a site's start time) comes from
psutil, so a simulation or a deployment runs on macOS as on Linux; Linux's /proc is read
only where something else answers when it is missing."""

import ast
import builtins
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedrag.federation.launch.processes import children, free_port, proc_stat

ROOT = Path(__file__).resolve().parents[1]

# each process writes what the kernel tells it of itself, then starts the next and waits
TREE = """
import json, os, subprocess, sys, time
depth, out = int(sys.argv[1]), sys.argv[2]
with open(f"{out}.{depth}.tmp", "w") as f:
    json.dump({"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0)}, f)
os.replace(f"{out}.{depth}.tmp", f"{out}.{depth}")
if depth < 2:
    subprocess.Popen([sys.executable, __file__, str(depth + 1), out]).wait()
else:
    time.sleep(300)
"""


def _told(out: Path, depth: int) -> dict:
    path = Path(f"{out}.{depth}")
    while not path.exists():  # the event: the process has written what it was told
        time.sleep(0.05)
    return json.loads(path.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stands in for Linux's hidepid")
def test_a_process_trees_members_parents_sessions_and_states_are_what_each_process_was_told(tmp_path, monkeypatch):
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    root = subprocess.Popen([sys.executable, str(script), "0", str(tmp_path / "told")], start_new_session=True)
    try:
        told = [_told(tmp_path / "told", d) for d in range(3)]
        assert told[0]["pid"] == root.pid
        assert children(root.pid) == [told[1]["pid"], told[2]["pid"]], "each after its parent: stopped in reverse"
        assert children(told[2]["pid"]) == []
        for me in told:
            st = proc_stat(me["pid"])
            assert (st.ppid, st.sid, st.state) == (me["ppid"], me["sid"], "R"), me
            assert proc_stat(me["pid"]).process == st.process, "the same process, seen twice"
        assert told[0]["sid"] == root.pid != os.getsid(0), "its own session, as the launcher starts a run"
        with monkeypatch.context() as hidden:  # Linux's hidepid: another user's process cannot be read
            _unreadable(hidden, 1)
            assert children(root.pid) == [told[1]["pid"], told[2]["pid"]], "the unreadable one is passed over"
        assert proc_stat(told[0]["pid"]).process != proc_stat(told[2]["pid"]).process
        leaf = told[2]["pid"]
        os.kill(leaf, signal.SIGSTOP)
        _until(lambda: proc_stat(leaf).state == "T")  # the event: the kernel has stopped it
        os.kill(told[1]["pid"], signal.SIGSTOP)  # its parent, held: it cannot reap the leaf
        # once stopped, not merely signalled: a parent woken in wait() by the SIGSTOP reaps a
        # child that died meanwhile before it stops, and the leaf would be gone, never a zombie
        _until(lambda: proc_stat(told[1]["pid"]).state == "T")
        os.kill(leaf, signal.SIGKILL)
        _until(lambda: proc_stat(leaf).state == "Z")
        os.kill(told[1]["pid"], signal.SIGCONT)  # the parent reaps it: gone
        _until(lambda: proc_stat(leaf) is None)
    finally:
        for pid in [*children(root.pid)[::-1], root.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        root.wait()
    assert proc_stat(root.pid) is None and children(root.pid) == [], "a process gone is None, with no descendants"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's boot time, as psutil reads it")
def test_a_process_is_itself_after_a_clock_step_and_another_when_its_pid_is_reused(monkeypatch):
    """Linux gives a process's start in ticks since boot; as epoch seconds it moves whenever
    the wall clock is stepped (NTP, a laptop waking), and a process seen before would be
    taken for another after: a Ray process left running, a site taken for gone. A process
    that started later under the same pid is another."""
    import psutil._pslinux as linux

    from procs import running

    me = os.getpid()
    seen, known, started = proc_stat(me), running([me]), psutil.Process(me).create_time()
    real = linux.boot_time
    monkeypatch.setattr(linux, "boot_time", lambda: real() + 1.0)  # the clock stepped 1 s forward
    assert psutil.Process(me).create_time() == started + 1.0, "the stepped clock moves the start in epoch seconds"
    assert proc_stat(me).process == seen.process and running([me]) == known
    real_start = linux.Process.create_time
    later = lambda self, monotonic=False: real_start(self, monotonic) + (0.5 if monotonic else 0.0)  # noqa: E731
    monkeypatch.setattr(linux.Process, "create_time", later)  # the kernel's count for a process started later
    assert proc_stat(me).process != seen.process and running([me]) != known


def _unreadable(monkeypatch, pid: int) -> None:
    """/proc/PID/stat refused to psutil, as Linux's `hidepid` refuses another user's."""
    import psutil._common as common
    import psutil._pslinux as linux

    def refusing(opener):
        def open_binary(path, *args, **kw):
            if str(path).endswith(f"/{pid}/stat"):
                raise PermissionError(13, "Permission denied", str(path))
            return opener(path, *args, **kw)

        return open_binary

    monkeypatch.setattr(common, "open_binary", refusing(common.open_binary))
    monkeypatch.setattr(linux, "open_binary", refusing(linux.open_binary))


def _until(check) -> None:
    for _ in range(200):  # a guard: the kernel acts on a signal when it gets to it
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("the process never got there")


def _reads_proc() -> set[str]:
    """The fedrag functions whose code (not docstrings) names a /proc path."""
    found = set()
    for path in sorted((ROOT / "fedrag").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            docstring = ast.get_docstring(fn, clean=False)
            for node in ast.walk(fn):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/proc" in node.value:
                    if node.value != docstring:
                        found.add(f"{path.relative_to(ROOT).with_suffix('').as_posix().replace('/', '.')}.{fn.name}")
    return found


def test_only_functions_with_an_answer_elsewhere_read_linux_proc():
    """macOS has no /proc: what lists, names or stops processes must not read it (a
    simulation followed its Ray processes there every 2 s and failed at once on macOS)."""
    assert _reads_proc() == {
        "fedrag.federation.launch.processes.free_port",
        "fedrag.federation.site.client_app._process_start",
        "fedrag.retrieve.encode.cpu_has_bf16",
    }


def test_without_proc_a_sites_start_port_and_cpu_answer_from_elsewhere(monkeypatch):
    """The three readers of /proc with it missing (as on macOS): the start time from psutil
    (the kernel's), within the second Linux's boot-time rounding allows; a port; no bf16."""
    from fedrag.federation.site.client_app import _process_start
    from fedrag.retrieve.encode import cpu_has_bf16

    exact = _process_start()
    real_open, real_read = builtins.open, Path.read_text

    def no_proc_open(file, *args, **kw):
        if str(file).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return real_open(file, *args, **kw)

    def no_proc_read(self, *args, **kw):
        if str(self).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_read(self, *args, **kw)

    import psutil

    told = psutil.Process().create_time()  # psutil reads /proc itself on Linux: asked before it is gone

    class AsOnMacOS:  # psutil where it asks the kernel (sysctl), not /proc
        def __init__(self, pid=None):
            pass

        def create_time(self):
            return told

    monkeypatch.setattr(psutil, "Process", AsOnMacOS)
    monkeypatch.setattr(builtins, "open", no_proc_open)
    monkeypatch.setattr(Path, "read_text", no_proc_read)
    # psutil adds Linux's boot time in whole seconds: up to 1 s before the exact start (and /proc/uptime's 10 ms)
    assert _process_start() == told and -1.02 < told - exact < 0.02
    assert cpu_has_bf16() is False
    assert 1024 < free_port() < 65536


@pytest.mark.parametrize("missing", ["/proc/self/stat", "/proc/uptime"])
def test_a_sites_start_time_is_0_when_no_source_answers(monkeypatch, missing):
    import psutil

    from fedrag.federation.site.client_app import _process_start

    real_open = builtins.open

    def no_proc_open(file, *args, **kw):
        if str(file) == missing:
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return real_open(file, *args, **kw)

    class Denied:  # psutil where the system refuses the answer
        def __init__(self, pid=None):
            raise psutil.AccessDenied(os.getpid())

    monkeypatch.setattr(psutil, "Process", Denied)
    monkeypatch.setattr(builtins, "open", no_proc_open)
    assert _process_start() == 0.0
