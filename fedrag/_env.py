"""Process-wide defaults: offline Hugging Face, quiet and prompt Flower/Ray, one import helper."""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # Ray starts an idle worker per CPU for a local session's first driver; Flower's site actors
    # never use them (their workers carry the run's runtime_env), so each was a Python process
    # importing Ray for nothing (~0.5 CPU-s and its memory, per core, per simulation)
    "RAY_prestart_worker_first_driver": "0",
    # a site given no GPU (--gpus-per-site 0) sees none: Ray does so today by default and says
    # its default will change (then a site on a GPU machine would train on a GPU Ray does not
    # count), so the choice is written here rather than left to Ray's version
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
    # how often a SuperExec (started by flower-superlink / flower-supernode) looks for a
    # ServerApp or ClientApp to launch; Flower's default 1 s is paid on every message
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    # oneDNN (PyTorch's CPU kernels) keeps a compiled kernel per input shape, 1,024 by default; a
    # long encode meets a new sequence length every batch and its memory grew by ~70 MB a chunk
    # of 2,048 passages (2.5 GB peak for 100,000). 16 held it flat at the same speed (measured)
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16",
}


def apply_defaults() -> None:
    """Set offline/telemetry defaults unless the user already chose a value.

    `FEDRAG_ONLINE=1` leaves the Hugging Face Hub reachable (hub ids, hub datasets).
    """
    online = os.environ.get("FEDRAG_ONLINE") == "1"
    for key, value in OFFLINE_DEFAULTS.items():
        if online and key.endswith("OFFLINE"):
            continue
        os.environ.setdefault(key, value)
    if os.environ.get("FEDRAG_VERBOSE") != "1":
        # peft reads transformers 5's deprecated alias on every LoRA wrap; nothing a user can act on
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        # transformers' "Loading weights" bars on every model load: it reads
        # HF_HUB_DISABLE_PROGRESS_BARS (set above) when it loads, so only an already loaded one
        # is told (importing transformers costs a second a ClientApp process would pay per message)
        import sys

        if "transformers" in sys.modules or "huggingface_hub" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()


_OWNED = False


def own_process() -> None:
    """Mark this process as fedrag's own (the CLI, a site's resident worker call it): what its
    libraries' imports make may then be frozen out of the garbage collector (`fedrag._env.heavy_imports`)."""
    global _OWNED
    _OWNED = True


@contextlib.contextmanager
def heavy_imports():
    """The block (an import of torch, transformers and sentence-transformers) with the cyclic
    garbage collector paused, then as it was. Such an import makes ~800,000 objects that all
    live: the collector's passes over them find nothing (~1.1 CPU-s of a ~7 s import). In a
    process fedrag owns (`own_process`) they are then frozen
    (`gc.freeze`), so no later full pass walks them either; imported as a library, fedrag only
    pauses the collector, since freezing would keep the caller's cyclic garbage of the moment."""
    import gc

    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
        if _OWNED:
            gc.freeze()
    finally:
        if was_on:
            gc.enable()


def require(module: str, extra: str | None = None):
    """Import an optional dependency or fail with one line telling how to install it."""
    from fedrag.errors import FedragError

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = f"pip install {extra or module}"
        raise FedragError(f"optional dependency '{module}' is missing ({exc}); {hint}") from exc


def cache_dir() -> str:
    """Root of fedrag's caches (converted models, corpus embeddings)."""
    root = os.environ.get("FEDRAG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fedrag"
    )
    os.makedirs(root, exist_ok=True)
    return root
