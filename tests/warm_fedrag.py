"""A `fedrag` command for tests that run shell commands as a user types them, without
paying fedrag's imports in every process.

Importing fedrag's libraries (torch, transformers, sentence-transformers, faiss) costs
about 7 CPU-s a process (CONTRIBUTING.md, "Where the time goes"). `serve` imports them
once and listens on a Unix socket; the script `install` writes (`DIR/fedrag`) sends its
arguments, working directory, environment and standard streams there, and the server
forks a fresh process that runs `fedrag.cli.main.main` with them: the real CLI, one
process a command, its exit status returned to the shell.

    with running(tmp_path, ROOT) as env:   # the server, and an environment with DIR/fedrag on PATH
        subprocess.run(["bash", "-c", "fedrag eval ..."], env=env)
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
    server and the processes it forks are stopped by their process group on the way out."""
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
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def call(sock: str, argv: list[str]) -> int:
    """Run `fedrag ARGV` in a process forked by the server; its exit status."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(sock)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(s, [json.dumps(request).encode()], [0, 1, 2])
        return int(s.recv(16) or b"1")


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
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            conn.send(str(code if code >= 0 else 128 - code).encode())


def _child(request: dict, fds: list[int]) -> None:
    """The forked process: the caller's streams, directory and environment, then the CLI;
    ends as a process exits (atexit handlers, flushed streams) with the CLI's status."""
    import atexit
    import traceback

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
        sys.exit(call(sys.argv[2], sys.argv[3:]))
