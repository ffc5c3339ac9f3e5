"""Strategy → (ClientApp, ServerApp): the one converter from fedrag to Flower.

It is generic over the stage interface (`trains` + `loss`): any strategy of
`fedrag.strategies`, or any single stage, becomes a Flower app whose phases are
the strategy's phases, run as consecutive federated phases.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from fedrag.data.jsonl import load_qa
from fedrag.errors import FedragError
from fedrag.federation.site.client_app import make_client_app, run_task
from fedrag.federation.task import FedTask


def sites_from_paths(paths: list[dict[str, str]]):
    """`site_data` for simulation: partition `i` reads `paths[i]` (corpus + train)."""
    cache: dict[int, tuple] = {}

    def site_data(context):
        i = int(context.node_config["partition-id"])
        if i not in cache:
            cache[i] = (paths[i]["corpus"], load_qa(paths[i]["train"]))
        return cache[i]

    return site_data


def site_from_node_config(context):
    """`site_data` for `flwr run`: a SuperNode names its own files with
    `--node-config 'corpus="..." train="..."'`; a node of Flower's simulation (node config
    `partition-id`, `num-partitions`) takes its partition of the run config's `corpus` and
    `train`, split as `fedrag federate` splits them (`partition`, `seed`)."""
    cfg = context.node_config
    if "corpus" in cfg and "train" in cfg:
        return cfg["corpus"], load_qa(cfg["train"])
    if "partition-id" in cfg and "num-partitions" in cfg:
        task = run_task(context.run_config)
        if not (task.run.corpus and task.run.train):
            raise FedragError(
                "Flower's simulation: give the run config's corpus and train (absolute paths), e.g. "
                '--run-config \'corpus="/data/corpus.jsonl" train="/data/train.jsonl"\''
            )
        paths = simulated_site(
            task.run.corpus,
            task.run.train,
            int(cfg["num-partitions"]),
            task.run.partition,
            task.training.seed,
            int(cfg["partition-id"]),
        )
        return paths["corpus"], load_qa(paths["train"])
    raise FedragError('this SuperNode needs --node-config \'corpus="..." train="..."\' (its own data files)')


@functools.lru_cache(maxsize=8)
def simulated_site(corpus: str, train: str, n_sites: int, mode: str, seed: int, site: int) -> dict[str, str]:
    """Site `site` of `n_sites`: its part of `corpus` and `train`, written once under the
    cache (keyed by the files' contents and the split), so every process of a run, and a
    resumed run, reads the same partition."""
    from fedrag._io import file_digest
    from fedrag.data.jsonl import load_corpus, write_jsonl
    from fedrag.data.partition import partition
    from fedrag._env import cache_dir

    key = hashlib.sha256(json.dumps([file_digest(corpus), file_digest(train), n_sites, mode, seed]).encode())
    d = Path(cache_dir()) / "partitions" / key.hexdigest()[:16] / f"site{site}"
    paths = {"corpus": str(d / "corpus.jsonl"), "train": str(d / "train.jsonl")}
    if not (d / "train.jsonl").exists():
        part = partition(load_corpus(corpus), load_qa(train), n_sites, mode, seed)[site]
        write_jsonl(d / "corpus.jsonl", part.passages)
        write_jsonl(d / "train.jsonl", part.train)  # written last: its presence marks a complete site
    return paths


def to_flower(task: FedTask | None, site_data=site_from_node_config, policy=None, plan=None):
    """Return `(client_app, server_app)` for `task` (`None`: read from run_config).
    `plan`: any Strategy object (a composition of stage objects, your own included) to
    federate instead of the task's named one (`task.models.strategy` may also be an import
    path `"module:attribute"`, for deployment).
    `policy(context) -> SitePolicy` limits the models a site loads (default: its node
    config's `allow-models`, else the bundled models; [`TRUSTED`][fedrag.federation.site.policy.TRUSTED]
    allows any)."""
    from fedrag.federation.server.server_app import make_server_app

    return make_client_app(task, site_data, policy, plan=plan), make_server_app(task, plan)
