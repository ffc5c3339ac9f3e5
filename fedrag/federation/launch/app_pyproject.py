"""The Flower app, generated from the installed package: `fedrag app --out DIR` (or
[`write_app`][write_app]) writes the `pyproject.toml` that `flwr run DIR` deploys, so a
`pip install fedrag` needs no source checkout. Its `[tool.flwr.app.config]` is
[`FedTask`][fedrag.federation.task.FedTask]'s fields with their defaults (one source of
truth), its components are [`fedrag.federation.launch.flwr_components`][fedrag.federation.launch.flwr_components]. `examples/flower_app` in the
repository is this file as written by `fedrag app` (a test keeps them equal).
"""

from __future__ import annotations

import json
from pathlib import Path

from fedrag._io import atomic_write_text
from fedrag._settings import settings_of
from fedrag.federation.task import FedTask

HEADER = """\
# The fedrag Flower app (written by `fedrag app`): `flwr run DIR <connection>`.
# The ServerApp and ClientApp come from the installed fedrag package; every value below
# is a fedrag.federation.FedTask field and can be overridden with `--run-config`.
# Each SuperNode names its private data with
#   --node-config 'corpus="/path/corpus.jsonl" train="/path/train.jsonl"'
"""

BODY = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedrag-app"
version = "0.1.0"
description = "Federated RAG fine-tuning with fedrag"
license = "Apache-2.0"
dependencies = ["fedrag"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedrag"

[tool.flwr.app.components]
serverapp = "fedrag.federation.launch.flwr_components:server_app"
clientapp = "fedrag.federation.launch.flwr_components:client_app"

[tool.flwr.app.config]
"""


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, str) else repr(value)


def render_pyproject(strategy: str = "ra-dit") -> str:
    """The app's pyproject.toml; `strategy` is the default the config names."""
    defaults = {name: f.default for name, (f, _) in settings_of(FedTask).items()}
    values = {k: v for k, v in defaults.items() if v is not None}  # None: unset, the site's default
    values["strategy"] = strategy
    config = "".join(f"{name.replace('_', '-')} = {_toml(v)}\n" for name, v in values.items())
    return HEADER + BODY + config


def write_app(out: str | Path, strategy: str = "ra-dit") -> Path:
    """Write the app into directory `out` (created if needed); returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "pyproject.toml", render_pyproject(strategy))
    return out
