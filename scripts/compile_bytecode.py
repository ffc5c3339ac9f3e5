"""Write the .pyc files of what fedrag's processes import, for `scripts/setup.sh`.

    .venv/bin/python scripts/compile_bytecode.py

Where PYTHONDONTWRITEBYTECODE is set no process keeps the bytecode it compiles, so every
process (a CLI call, a site's ClientApp, a Ray actor, a test worker) would compile torch,
transformers and Flower again. Compiling the whole environment at install (`uv pip install
--compile-bytecode`) does ~25,000 modules, of which the test suite imports ~9,300: 43 s of a
57 s set-up on 2 cores. This imports the modules fedrag's processes start from, in one
process per group with bytecode writing on, so each imported module leaves its .pyc; the
packages whose own processes start from many entry points (Flower's, Ray's) are compiled
whole. A module left out is only compiled in memory by each process that imports it; a
module that is not installed (an extra) is skipped.

    .venv/bin/python scripts/compile_bytecode.py --missing flwr.supernode.cli

lists, by package, the modules that a process importing those modules would compile again.
For the processes a run starts many of (a Flower ClientApp per message, Ray's helpers in
every session) it should list none: each module listed is compiled again in each of them.
"""

from __future__ import annotations

import compileall
import importlib
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GROUPS = (
    # the models' stack: every CLI command, a site, a Ray actor
    "fedrag.cli.main fedrag.pipeline fedrag.federation.site.resident_worker fedrag.federation.launch.simulation"
    " sentence_transformers peft transformers.models.bert.modeling_bert transformers.models.llama.modeling_llama"
    " transformers.models.qwen2.modeling_qwen2 transformers.models.mistral.modeling_mistral transformers.generation",
    # the processes a run starts many of: Flower's (a ClientApp per message) and Ray's helpers
    "fedrag.federation.site.client_app fedrag.federation.server.server_app fedrag.federation.launch.deployment"
    " fedrag.federation.launch.credentials"
    " flwr.supernode.cli flwr.superlink.cli flwr.supercore.cli flwr.simulation.app flwr.cli.app aiohttp.web uvicorn"
    " websockets faiss datasets bm25s gguf dp_accounting matplotlib.pyplot torch.distributed.run"
    # last: Ray's runtime-env agent puts its own copy of aiohttp first on sys.path
    " ray.dashboard.agent ray.dashboard.dashboard ray._private.log_monitor ray.autoscaler._private.monitor"
    " ray._private.runtime_env.agent.main",
    # the extras: tracking, bridges, docs, tests
    "mlflow.tracking mlflow.entities wandb tensorboard langchain_core.language_models langchain_core.runnables langchain_core.tracers"
    " langsmith.client langsmith.run_helpers llama_index.core qdrant_client mkdocs material mkdocstrings griffe pytest execnet",
)
WHOLE = ("flwr", "ray")


def _import(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # an extra that is not installed, or one that fails to import here
            pass


def _missing(names: list[str]) -> None:
    from collections import Counter

    _import(names)
    files = {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {__file__}
    files = [f for f in files if os.path.isabs(f) and f.endswith(".py")]  # not torch's virtual `_ops.py`
    lacking = [Path(f).parts for f in files if not os.path.exists(importlib.util.cache_from_source(f))]
    print(f"{len(lacking)} of {len(files)} imported modules have no .pyc")
    top = Counter(p[p.index("site-packages") + 1] if "site-packages" in p else p[-2] for p in lacking)
    for package, n in top.most_common():
        print(f"{n:6d} {package}")


def main() -> None:
    if sys.argv[1:2] in (["--import"], ["--missing"]):
        (_import if sys.argv[1] == "--import" else _missing)(sys.argv[2:])
        return
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmds = [[sys.executable, __file__, "--import", *group.split()] for group in GROUPS]

    def run(cmd: list[str]) -> int:
        return subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        codes = list(pool.map(run, cmds))
    for name in WHOLE:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            compileall.compile_dir(Path(spec.submodule_search_locations[0]), quiet=2, workers=0)
    if any(codes):  # bytecode only saves time: say so, and let the set-up go on
        print(f"compile_bytecode: an import group ended with {codes}; its modules compile when imported", file=sys.stderr)


if __name__ == "__main__":
    main()
