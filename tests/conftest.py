from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Two or three xdist workers (and the Ray actors and processes they start) share two cores. torch
# gives each process one OpenMP thread per core, and those threads spin while they wait for
# a core: the fast loop took 140.6 s with them and 59.1 s with one thread a process. Set
# before anything imports torch; every process the tests start inherits it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fedrag._env import apply_defaults  # noqa: E402

apply_defaults()
sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_bert, build_tiny_llama  # noqa: E402

DURATIONS = Path(__file__).parent / "durations.json"
_GC = pytest.StashKey[tuple]()


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (in `addopts`): 2 workers for the fast loop, 3 for a run with slow tests. A
    worker's start (collection imports torch and sentence-transformers) costs ~10 CPU-s; the
    fast loop is CPU-bound, and took 48.7-52.6 s on 2 workers against 58-61 s on 3. The slow
    tests wait on processes they start (deployments, Ray), which a third worker fills."""
    return 2 if "not slow" in (config.option.markexpr or "") else 3


def pytest_collection_modifyitems(config, items):
    """Longest first (tests/durations.json, written by scripts/suite_durations.py), the rest in
    pytest's order: with `--maxschedchunk 1` each xdist worker takes the next test when it is
    free, so no long test starts last while the other workers sit idle."""
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    items.sort(key=lambda item: -seconds.get(item.nodeid, 0.0))  # a stable sort


def pytest_configure(config):
    """A worker's cyclic garbage collector traverses every object the imports made (torch,
    transformers, ...) at each full collection, and by default runs one every ten of its
    middle collections: 16 in a fast-loop worker, most while collection imports, up to 0.57 s
    each, 3.6-4.1 CPU-s a worker in all (`gc.callbacks`). It is off while the tests are
    collected (what that imports lives as long as the worker), then what collection made is
    frozen (never traversed again) and a full collection waits for 100 middle ones. The
    tests' garbage is still collected."""
    import gc

    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):  # a process that collects
        config.stash[_GC] = (gc.isenabled(), gc.get_threshold())
        gc.disable()


def pytest_collection_finish(session):
    import gc

    if _GC in session.config.stash:
        gc.freeze()
        gc.set_threshold(700, 10, 100)
        if session.config.stash[_GC][0]:
            gc.enable()


def pytest_unconfigure(config):
    import gc

    if _GC in config.stash:  # as the process had them
        enabled, thresholds = config.stash[_GC]
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        (gc.enable if enabled else gc.disable)()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Each test session gets its own fedrag cache (embeddings) unless FEDRAG_CACHE is set;
    only converted models are shared (expensive, and safe to share)."""
    if "FEDRAG_CACHE" in os.environ:
        return
    cache = tmp_path_factory.mktemp("fedrag-cache")
    os.environ["FEDRAG_CACHE"] = str(cache)
    # converted models (the bundled SmolLM2's GGUF, ~14 s) are shared by the workers and kept
    # between runs: a conversion is written atomically and keyed by its source file
    shared = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedrag" / "models"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(shared, target_is_directory=True)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("tiny-models")
    return {"retriever": str(build_tiny_bert(out)), "generator": str(build_tiny_llama(out))}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from fedrag.data import demo

    out = tmp_path_factory.mktemp("demo")
    demo.write(out, seed=0, n_people=24)
    return out


@pytest.fixture(scope="session")
def warm_cli(tmp_path_factory) -> dict[str, str]:
    """An environment whose `fedrag` runs each command in a process of its own, forked from
    one that imported fedrag's libraries once for this worker (tests/warm_fedrag.py): for
    tests whose subject is a process (its exit status, a kill, a signal, what it leaves on
    disk), each without ~7 CPU-s of imports. Add a test's variables to a copy of it."""
    import warm_fedrag

    with warm_fedrag.running(tmp_path_factory.mktemp("warm-cli"), Path(__file__).resolve().parents[1]) as env:
        yield env


@pytest.fixture(autouse=True)
def _environment_kept():
    """A test leaves the worker's PYTHONPATH and PYTHONBREAKPOINT as it found them: a simulation
    sets them (Flower's Ray backend the first to the whole sys.path, this checkout's included)
    and leaves them, and every process a later test started would import from there
    (`simulate` and `in_process.run_flower_simulation` put them back)."""
    from fedrag.federation.launch.simulation import RAY_SETS

    before = {name: os.environ.get(name) for name in RAY_SETS}
    yield
    assert {name: os.environ.get(name) for name in RAY_SETS} == before, "the test changed this worker's environment and left it"


@pytest.fixture(autouse=True)
def _no_run_thread_left():
    """A test leaves no thread of a federated run running in the worker: Flower's ServerApp
    thread (`server_th_with_start_checks`) or fedrag's simulation thread. One left behind
    loads models beside the next test's (torch's default dtype is process-wide) and writes
    to its run's OUT after the run has ended."""
    import threading

    before = set(threading.enumerate())
    yield
    left = [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and ("server_th" in t.name or t.name == "fedrag-simulation")
    ]
    assert not left, f"threads of a federated run still running after the test: {left}"
