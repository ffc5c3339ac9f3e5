"""A `fedrag` command for tests that run shell commands as a user types them, without
paying fedrag's imports in every process.

Importing fedrag's libraries (torch, transformers, sentence-transformers, faiss) costs
about 7 CPU-s a process (CONTRIBUTING.md, "Where the time goes"). `serve` imports them
once and listens on a Unix socket; the script `install` writes (`DIR/fedrag`) sends its
arguments, working directory, environment and standard streams there, and the server
forks a fresh process that runs `fedrag.cli.main.main` with them: the real CLI, one
process a command (in a process group of its own, as a shell runs a command), its exit
status returned to the caller; a command killed by a signal kills the caller with it, so
`subprocess.run(["fedrag", ...]).returncode` is `-9` after a SIGKILL, as for `python -m fedrag`.

    with running(tmp_path, ROOT) as env:   # the server, and an environment with DIR/fedrag on PATH
        subprocess.run(["bash", "-c", "fedrag eval ..."], env=env)

The tests' `warm_cli` fixture (conftest.py) is one such environment for a whole xdist
worker. What a fork does not reproduce: what the libraries read from the environment when
imported (the server's, not the command's) and signal dispositions inherited from the
caller; tests of those start `python -m fedrag` themselves.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

PRELOAD = ("torch", "transformers", "sentence_transformers", "peft", "faiss", "datasets", "fedrag.cli.main")


def install(bin_dir: Path, sock: Path) -> Path:
    """Write `bin_dir/fedrag`, which runs each call through the server at `sock`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "fedrag"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I "{Path(__file__).resolve()}" call "{sock}" "$@"\n')
    script.chmod(0o755)
    return script


@contextmanager
def running(where: Path, root: Path):
    """An environment in which `fedrag` runs through a server importing fedrag from
    `root`, for as long as the context lasts (its log: `where/warm-fedrag.log`). The
    server and any command it forked still running are stopped on the way out."""
    import contextlib
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fedrag-") as short, (where / "warm-fedrag.log").open("w") as log:
        sock = Path(short) / "s"  # a socket's path has at most ~100 characters
        server = subprocess.Popen(
            [sys.executable, __file__, "serve", str(sock)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
            start_new_session=True,
        )
        try:
            assert server.stdout.readline() == "ready\n", (where / "warm-fedrag.log").read_text()[-3000:]
            bin_dir = install(Path(short) / "bin", sock).parent
            yield {**os.environ, "PYTHONPATH": str(root), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        finally:
            from fedrag.federation.launch.processes import children

            for pid in children(server.pid)[::-1]:  # commands still running, each in a group of its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def call(sock: str, argv: list[str]) -> int:
    """Run `fedrag ARGV` in a process forked by the server; its exit status (negative: the
    signal that ended it). While the command is stopped (SIGSTOP) this process is too, and
    continuing this one continues it: whoever waits on this process sees what the command does."""
    import signal

    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(sock)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(s, [json.dumps(request).encode()], [0, 1, 2])
        while (reply := s.recv(16)) == b"stopped":
            os.kill(os.getpid(), signal.SIGSTOP)
            s.send(b"continue")
        return int(reply or b"1")


def _exit_as(code: int) -> None:
    """End this process as the command ended: with its status, or by its signal."""
    if code < 0:
        import signal

        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def serve(sock: str) -> None:
    import importlib

    from fedrag.models import import_sentence_transformers

    import_sentence_transformers()  # as a `fedrag` process imports it, without scikit-learn
    for module in PRELOAD:
        importlib.import_module(module)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(sock)
    server.listen()
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                _child(json.loads(message), fds)
            for fd in fds:
                os.close(fd)
            try:
                conn.send(str(_wait(pid, conn)).encode())
            except OSError:  # the caller is gone (a failed test killed it): serve the next one
                pass


def _wait(pid: int, conn: socket.socket) -> int:
    """The command's exit status; each time it stops, the caller is told and stops too, and
    the command is continued when the caller is (killed if the caller died meanwhile)."""
    import signal

    while True:
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            return os.waitstatus_to_exitcode(status)
        try:
            conn.send(b"stopped")
            continued = conn.recv(16)  # once the caller is continued; b"" if it is gone
        except OSError:
            continued = b""
        os.kill(pid, signal.SIGCONT if continued else signal.SIGKILL)  # a caller gone takes its command with it


def _child(request: dict, fds: list[int]) -> None:
    """The forked process: the caller's streams, directory and environment, then the CLI;
    ends as a process exits (atexit handlers, flushed streams) with the CLI's status."""
    import atexit
    import traceback

    os.setpgid(0, 0)  # the server's group is not the command's: a signal to its group reaches it alone
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["fedrag", *request["argv"]]
    code = 1
    try:
        from fedrag.cli.main import main

        main()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # noqa: BLE001 - printed as an uncaught exception would be
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        _exit_as(call(sys.argv[2], sys.argv[3:]))
