"""The house rules: imports only go down the pipeline, no cycles (function-level imports
included), the CLI is a leaf, and ``import fedrag`` has no side effects."""

import ast
import subprocess
import sys
from pathlib import Path

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


def test_import_fedrag_has_no_side_effects_and_federation_needs_no_cli():
    code = (
        "import os, sys; import fedrag; "
        "assert 'HF_HUB_OFFLINE' not in os.environ and 'torch' not in sys.modules; "
        "import fedrag.federation, fedrag.federation.apps, fedrag.federation.server, fedrag.federation.client; "
        "assert not [m for m in sys.modules if m.startswith('fedrag.cli')], sorted(sys.modules); "
        "assert fedrag.TrainConfig and fedrag.simulate and fedrag.Stage; print('ok')"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    res = subprocess.run([sys.executable, "-m", "fedrag", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "compare" in res.stdout and "search-lr" in res.stdout, res.stderr


def test_every_public_name_resolves():
    for name in fedrag.__all__:
        assert getattr(fedrag, name) is not None, name


def test_the_shipped_flower_app_config_matches_the_task_defaults():
    """The app is generated from FedTask (fedrag app); the repository's copy is that output."""
    import tomllib
    from dataclasses import fields

    from fedrag.federation import FedTask
    from fedrag.federation.app import render_pyproject

    path = Path(__file__).parents[1] / "examples" / "flower_app" / "pyproject.toml"
    assert path.read_text() == render_pyproject(), "regenerate it: fedrag app --out examples/flower_app --overwrite"
    config = tomllib.loads(path.read_text())["tool"]["flwr"]["app"]["config"]
    defaults = {f.name.replace("_", "-"): f.default for f in fields(FedTask) if f.default is not None}
    assert set(config) == set(defaults), set(config) ^ set(defaults)
    differs = {k: (config[k], defaults[k]) for k in config if config[k] != defaults[k] and k != "strategy"}
    assert not differs, differs
