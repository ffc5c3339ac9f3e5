"""A site's resident worker: models and store stay loaded across a deployment's rounds.

Flower (through 1.42) starts a new ClientApp process for every message in deployment, and
each one would import torch and transformers, load both models and the site's store and
rebuild its optimizer: seconds per message at 135M parameters, a 16 GB read at 8B. A site
started with a resident worker (`python -m fedrag.federation.site.resident_worker SOCKET`, which
`fedrag federate --engine deployment` starts next to each SuperNode) keeps them in one
long-lived process; the ClientApp process checks the site's policy and hands the round to
the worker over a Unix socket (`resident="SOCKET"` in the SuperNode's node config), which
runs exactly the code a simulated site runs ([`train_round`][fedrag.federation.site.local_round.train_round],
[`evaluate_round`][fedrag.federation.site.local_round.evaluate_round]) on its cached models. What
travels back is wire-ready (Flower records), so the ClientApp never imports torch.

The socket is the site's own: it lives in a directory only the site's user can enter, and
both ends prove they hold the key in the file `key` beside it (hex; the HMAC challenge of
`multiprocessing.connection`) before anything is unpickled. The worker serves one request
at a time (a site's messages arrive one after another) and exits when its parent does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path


def start_worker(start) -> str:
    """Start a site's worker with `start(cmd)` (a Popen); its socket path. The key both
    ends present is the file `key` beside the socket. The worker needs seconds to import
    torch: [`wait_listening`][wait_listening] before the first round, or let the ClientApp
    wait for it."""
    import secrets
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="fedrag-site-"))  # mode 0700; short, as a socket path must be
    sock = folder / "worker.sock"
    key = folder / "key"
    key.touch(mode=0o600)
    key.write_text(secrets.token_hex(32))
    start([sys.executable, "-m", "fedrag.federation.site.resident_worker", str(sock)])
    return str(sock)


def wait_listening(sock: str, proc, log: Path, timeout: float = 300) -> None:
    """Block until the worker `proc` listens on `sock`; one line if it ended or never did."""
    from fedrag.errors import FedragError

    deadline = time.time() + timeout
    while not Path(sock).exists():
        if proc.poll() is not None or time.time() > deadline:
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise FedragError(f"a site's resident worker did not start: {tail[0] if tail else 'no output'} (log: {log})")
        time.sleep(0.1)


def _handle(op: str, kwargs: dict):
    from fedrag.federation.site.local_round import evaluate_round, train_message

    if op == "train":
        return train_message(**kwargs)
    if op == "evaluate":
        return evaluate_round(**kwargs)
    raise ValueError(f"unknown operation {op!r}")


def _warm() -> None:
    """Import what a round needs before listening: whoever starts the worker waits for its
    socket, so the site's first round does not pay for torch, transformers and
    sentence-transformers (seconds; the ClientApp itself imports none of them)."""
    import importlib

    import fedrag.federation.site.local_round  # noqa: F401
    import fedrag.pipeline  # noqa: F401
    from fedrag.models import import_sentence_transformers

    import_sentence_transformers()
    for name in ("transformers", "peft"):
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - a missing dependency fails the round with its own message
            pass


def _watch_parent(parent: int) -> None:
    """Exit with the process that started the worker (a launcher killed with SIGKILL
    leaves no worker behind holding a model)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def serve(socket_path: str) -> None:
    """Serve requests on `socket_path` until killed."""
    import pickle
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Listener

    from fedrag._env import apply_defaults, own_process
    from fedrag.federation.site.client_app import resident_key

    apply_defaults()
    own_process()
    _warm()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    with Listener(socket_path, family="AF_UNIX", authkey=resident_key(socket_path)) as listener:
        print(f"fedrag resident worker: listening on {socket_path}", flush=True)
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError) as exc:  # a peer without the key, or one that hung up
                print(f"fedrag resident worker: refused a connection ({type(exc).__name__})", flush=True)
                continue
            with conn:
                try:
                    op, kwargs = pickle.loads(conn.recv_bytes())
                    try:
                        result = (True, _handle(op, kwargs))
                    except Exception as exc:  # noqa: BLE001 - the site's failure goes back as one line
                        result = (False, f"{type(exc).__name__}: {exc}"[:1000])
                    conn.send_bytes(pickle.dumps(result))
                except (OSError, EOFError):  # the ClientApp process went away mid-round
                    continue


def main(argv: list[str] | None = None) -> None:
    """`python -m fedrag.federation.site.resident_worker SOCKET`: serve a site's rounds on SOCKET."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fedrag.federation.site.resident_worker",
        description="A site's resident worker: keeps the site's models and store loaded across a deployment's rounds.",
        epilog="The key both ends present is the file `key` beside SOCKET, in a folder only the site's user can enter.",
    )
    parser.add_argument("socket", metavar="SOCKET", help="the Unix socket to listen on (the node config's resident=)")
    serve(parser.parse_args(argv).socket)


if __name__ == "__main__":
    main()
