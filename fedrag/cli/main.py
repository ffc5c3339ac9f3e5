"""`fedrag`'s entry point: registers every command module, applies process defaults,
and turns every failure into one line and an exit code (2 user error, 130 Ctrl-C,
143 SIGTERM). Nothing imports this module."""

from __future__ import annotations

import functools
import logging
import signal
import sys

from fedrag.cli import compare_cmds, data_cmds, fed_cmds, index_cmd, quickstart, train_cmds  # noqa: F401  (register commands)
from fedrag.cli.options import app

EXIT_USER, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143


class Terminated(BaseException):
    """SIGTERM, raised where the process is so cleanups (temp dirs, logs) run."""


class Interrupted(BaseException):
    """SIGINT (Ctrl-C), raised by fedrag's own handler: installed even where the parent
    left SIGINT ignored, and not a KeyboardInterrupt that a library could swallow."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess
    logging.disable(logging.CRITICAL)  # see _on_sigint
    raise Terminated()


def _on_sigint(signum, frame):  # pragma: no cover - exercised through a subprocess
    # the one line is all the user gets: while the interrupt unwinds, library threads that
    # are torn down with it log their own view of it (Flower's simulation workers: an
    # ERROR and a traceback per site whose Ray actor the shutdown ended mid-round)
    logging.disable(logging.CRITICAL)
    raise Interrupted()


@functools.cache
def _command():
    """The click command typer builds from `app`, built once per process: `app()` rebuilds it
    on every call (each option from its annotations, ~15 ms), and tests and notebooks call
    `main()` many times in one process."""
    import typer

    return typer.main.get_command(app)


def main() -> None:
    import os
    import warnings

    import click

    from fedrag._env import apply_defaults, own_process
    from fedrag.errors import FedragError

    apply_defaults()
    own_process()
    if os.environ.get("FEDRAG_VERBOSE") != "1":  # library deprecation chatter is not for CLI users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    handlers = signal.signal(signal.SIGTERM, _on_sigterm), signal.signal(signal.SIGINT, _on_sigint)
    logging_disabled = logging.root.manager.disable
    try:
        try:
            code = _command()(standalone_mode=False)
        except FedragError as exc:
            _fail(f"error: {exc}{_notes(exc)}", getattr(exc, "exit_code", EXIT_USER))
        except (Interrupted, KeyboardInterrupt, click.Abort) as exc:
            _stop(f"interrupted (Ctrl-C){_notes(exc, 'partial outputs were removed')}", EXIT_INTERRUPTED)
        except Terminated as exc:
            _stop(f"terminated (SIGTERM){_notes(exc, 'partial outputs were removed')}", EXIT_TERMINATED)
        except click.ClickException as exc:  # usage errors arrive here in non-standalone mode
            _fail(f"error: {exc.format_message()}", EXIT_USER)
        except (OSError, MemoryError) as exc:  # the environment's failures: disk full, permissions, out of memory
            _fail(f"error: {type(exc).__name__}: {exc}{_notes(exc)}", 1)
        except Exception as exc:  # a library's own error type on an environment failure (e.g. safetensors, disk full)
            if "No space left on device" not in str(exc):
                raise
            _fail(f"error: {type(exc).__name__}: {exc}{_notes(exc)}", 1)
        if code == EXIT_INTERRUPTED:
            _stop("interrupted (Ctrl-C); partial outputs were removed", EXIT_INTERRUPTED)
        if isinstance(code, int) and code:
            sys.exit(code)
    finally:  # an in-process caller (a test, a notebook) gets its own handlers (and logging) back
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
        logging.disable(logging_disabled)


def _notes(exc: BaseException, default: str = "") -> str:
    """What the code that the exception passed through added (`add_note`), e.g. where
    a resumable run kept its progress; else `default`."""
    notes = getattr(exc, "__notes__", None) or ([default] if default else [])
    return "".join(f"; {n}" for n in notes)


def _fail(message: str, code: int) -> None:
    print(f"fedrag: {message}", file=sys.stderr)
    sys.exit(code)


def _stop(message: str, code: int) -> None:
    """Print the one line and end the process now. Cleanups have run (the exception
    unwound every `with`); what is left are library threads (Ray, gRPC, Flower) that an
    orderly interpreter exit would wait for, possibly for minutes."""
    import os

    print(f"fedrag: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
