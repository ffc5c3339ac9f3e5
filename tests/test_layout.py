"""The house rules: imports only go down the pipeline, no cycles (function-level imports
included), the federation's rooms import only the rooms below them, the CLI is a leaf, and
``import fedrag`` has no side effects."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import fedrag

ROOT = Path(fedrag.__file__).parent

# the layout, bottom to top: a module may import only from its own layer or below
LAYERS = [
    {
        "fedrag._batch_probe",
        "fedrag._env",
        "fedrag._faults",
        "fedrag._io",
        "fedrag._lazy",
        "fedrag._progress",
        "fedrag._settings",
        "fedrag.errors",
        "fedrag.models",
    },
    {"fedrag.data"},
    {"fedrag.retrieve"},
    {"fedrag.generate"},
    {"fedrag.rag", "fedrag.pipeline"},
    {"fedrag.bridges"},
    {"fedrag.evaluate"},
    {"fedrag.losses"},
    {"fedrag.train"},
    {"fedrag.strategies"},
    {"fedrag.federation"},
    {"fedrag.cli", "fedrag.__main__"},
]

FED = "fedrag.federation"  # the paths below are built from it: scripts that move modules leave them as written
# fedrag.federation's rooms (fedrag.federation.<room>), bottom to top: a room imports from itself and the
# rooms of lower tiers only, so the two rooms of one tier (the server's and a site's code) never import each other
ROOMS = [("task", "wire"), ("privacy",), ("server", "site"), ("launch",)]
# the modules that moved into the rooms (issue #40) and still answer, deprecated, at their documented old paths
MOVED = {
    "apps": "launch.flwr_components",
    "converter": "launch.flower_apps",
    "deployment": "launch.deployment",
    "local_dp": "privacy.local_dp",
    "policy": "site.policy",
    "resident": "site.resident_worker",
    "secagg": "privacy.secagg",
    "simulation": "launch.simulation",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict) -> set[str]:
    """Every fedrag module ``path`` imports, at any depth (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        found |= {n for n in names if n.split(".")[0] == "fedrag" and n != "fedrag"}
    return {n if n in modules else n.rsplit(".", 1)[0] for n in found}


def _layer(module: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return i
    raise AssertionError(f"{module} is in no layer of the layout")


def test_imports_only_go_down_and_make_no_cycle():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items() if m != "fedrag"}
    upward = [(m, d) for m, deps in graph.items() for d in deps if _layer(d) > _layer(m)]
    assert not upward, f"imports that go up the layout: {upward}"
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(d) :] + [d])}")
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def _room(module: str) -> tuple[int, str] | None:
    """`(tier, room)` of a module of fedrag.federation's rooms; None for any other module."""
    parts = module.split(".")
    if parts[:2] != ["fedrag", "federation"] or len(parts) < 3:
        return None
    return next(((tier, parts[2]) for tier, rooms in enumerate(ROOMS) if parts[2] in rooms), None)


def test_the_federation_rooms_import_only_the_rooms_below():
    modules = _modules()
    top = {m.split(".")[2] for m in modules if m.startswith("fedrag.federation.")}
    assert top == {r for tier in ROOMS for r in tier} | set(MOVED), "fedrag/federation/ holds its rooms and the moved aliases"
    wrong = []
    for m, path in modules.items():
        here = _room(m)
        for d in _imports(path, modules) if here else ():
            there = _room(d)
            if d.startswith("fedrag.federation") and (there is None or (there[1] != here[1] and there[0] >= here[0])):
                wrong.append((m, d))
    assert not wrong, f"imports across the federation's rooms that do not go down: {wrong}"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_answers_at_its_old_path_with_a_deprecation_warning(old):
    old_path, new_path = f"{FED}.{old}", f"{FED}.{MOVED[old]}"
    sys.modules.pop(old_path, None)
    with pytest.warns(DeprecationWarning, match=new_path):
        module = importlib.import_module(old_path)
    assert module is importlib.import_module(new_path)


def test_the_old_privacy_report_names_and_resident_worker_command_still_work():
    from fedrag.federation.privacy import coverage

    privacy = importlib.import_module(f"{FED}.privacy")  # the package that took the report module's path
    with pytest.warns(DeprecationWarning, match="coverage.privacy_sections"):
        assert privacy.privacy_sections is coverage.privacy_sections
    # the room's modules warn of nothing, imported in a fresh process (here they are loaded already)
    code = "from fedrag.federation.privacy import local_dp, secagg"
    fresh = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    res = subprocess.run([sys.executable, "-m", f"{FED}.resident", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "SOCKET" in res.stdout, res.stderr
    assert "DeprecationWarning" in res.stderr and "site.resident_worker" in res.stderr


# the claims below need an interpreter that has imported nothing of fedrag's: one process
# checks them in turn, each step importing more (a process costs ~2-4 CPU-s of imports)
FRESH_INTERPRETER = """
import inspect, os, sys
import fedrag
assert 'HF_HUB_OFFLINE' not in os.environ and 'torch' not in sys.modules, 'import fedrag has side effects'
from fedrag.federation.launch.flwr_components import client_app
from fedrag.federation.site.client_app import make_client_app, run_task
from fedrag.federation.task import FedTask
cfg = FedTask(strategy='joint-token', rounds=2).to_config(); app = make_client_app(None, lambda c: None)
assert run_task(cfg).training.rounds == 2
heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss') if m in sys.modules]
assert not heavy, f"a site's ClientApp process imports {heavy}"
import fedrag.federation, fedrag.federation.server.server_app
assert not [m for m in sys.modules if m.startswith('fedrag.cli')], 'the federation imports the CLI'
assert fedrag.TrainConfig and fedrag.simulate and fedrag.Stage
import fedrag.evaluate.metrics
from fedrag import evaluate
assert inspect.isfunction(evaluate) and fedrag.evaluate is evaluate, evaluate
from fedrag.evaluate import metrics
assert metrics.exact_match
print('ok')
"""


def test_in_a_fresh_interpreter_imports_cost_only_what_they_use_and_exports_stay_functions():
    """In a fresh interpreter: `import fedrag` has no side effects (no environment variable
    set, no torch); a site's ClientApp process (Flower starts one per message, four a round
    under secure aggregation; with a resident worker it only parses the task, checks and
    forwards) imports no torch, whose import would cost about a CPU second each time; the
    federation imports no CLI; and `fedrag.evaluate`, a subpackage and the function fedrag
    exports from it, is the function after the subpackage was imported first (a script that
    did so got the module, and calling it failed: "'module' object is not callable")."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    res = subprocess.run([sys.executable, "-c", FRESH_INTERPRETER], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_every_public_name_resolves():
    for name in fedrag.__all__:
        assert getattr(fedrag, name) is not None, name


def test_the_shipped_flower_app_config_matches_the_task_defaults():
    """The app is generated from FedTask (fedrag app); the repository's copy is that output."""
    import tomllib

    from fedrag.federation import FedTask
    from fedrag.federation.launch.app_pyproject import render_pyproject

    path = Path(__file__).parents[1] / "examples" / "flower_app" / "pyproject.toml"
    assert path.read_text() == render_pyproject(), "regenerate it: fedrag app --out examples/flower_app --overwrite"
    config = tomllib.loads(path.read_text())["tool"]["flwr"]["app"]["config"]
    from fedrag._settings import settings_of

    defaults = {n.replace("_", "-"): f.default for n, (f, _) in settings_of(FedTask).items() if f.default is not None}
    assert set(config) == set(defaults), set(config) ^ set(defaults)
    differs = {k: (config[k], defaults[k]) for k in config if config[k] != defaults[k] and k != "strategy"}
    assert not differs, differs


WITHOUT_SKLEARN = """
import sys
import torch
import fedrag.models as models
import gc

passes = []
gc.callbacks.append(lambda phase, info: passes.append(info["generation"]) if phase == "start" else None)
st = models.import_sentence_transformers()
assert "sklearn" not in sys.modules and "scipy.stats" not in sys.modules, "scikit-learn was imported"
# none but the young one the collector's return may start (787 passes, 7 of them full, without the pause)
assert len(passes) <= 1 and 2 not in passes and gc.isenabled(), f"passes while importing: {passes[:20]}; on: {gc.isenabled()}"
# sparse inputs take sentence-transformers' scikit-learn path, imported on this first call:
# |1-0|+|0-1|+|2-2| = 2 and |0-0|+|3-1|+|0-2| = 4
a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]).to_sparse()
b = torch.tensor([[0.0, 1.0, 2.0]]).to_sparse()
assert st.util.manhattan_sim(a, b).tolist() == [[-2.0], [-4.0]]
import sklearn.metrics
assert hasattr(sklearn.metrics, "roc_auc_score"), "a later import gets the real module"

# a release importing a name the stand-in lacks: imported again the plain way
for name in [n for n in sys.modules if n.startswith(("sentence_transformers", "sklearn"))]:
    del sys.modules[name]
names, models._SKLEARN_NAMES = models._SKLEARN_NAMES, ()
gc.disable()  # a caller's choice, kept
st = models.import_sentence_transformers()
assert st.util.similarity.pairwise_distances is sys.modules["sklearn.metrics"].pairwise_distances
assert not gc.isenabled(), "the collector is left as the caller had it"
gc.enable()

# in a process fedrag owns (the CLI's, a site worker's) what the import made is frozen
assert gc.get_freeze_count() == 0, "fedrag imported as a library freezes nothing"
for name in [n for n in sys.modules if n.startswith(("sentence_transformers", "sklearn"))]:
    del sys.modules[name]
models._SKLEARN_NAMES = names
import fedrag._env

fedrag._env.own_process()
models.import_sentence_transformers()
assert gc.get_freeze_count() > 500_000 and gc.isenabled(), f"frozen: {gc.get_freeze_count()}"
print("ok")
"""


@pytest.mark.slow
def test_loading_a_retriever_imports_no_scikit_learn_and_its_one_function_still_works():
    """sentence-transformers imports scikit-learn at start-up for one function (~1.5 CPU-s
    in every process that loads a retriever); fedrag imports it without, and the function
    imports it when called. The import makes no full garbage-collection pass (~1.1 CPU-s of
    passes over objects that all live) and leaves the collector as it found it; in a process
    fedrag owns, what it made is frozen. A fresh interpreter, since the test process holds both."""
    res = subprocess.run([sys.executable, "-c", WITHOUT_SKLEARN], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
