"""Strategy → (ClientApp, ServerApp): the one converter from fedrag to Flower.

It is generic over the stage interface (`trains` + `loss`): any strategy of
`fedrag.strategies`, or any single stage, becomes a Flower app whose phases are
the strategy's phases, run as consecutive federated phases.
"""

from __future__ import annotations

from fedrag.data.jsonl import load_qa
from fedrag.federation.client import make_client_app
from fedrag.federation.server import make_server_app
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
    """`site_data` for deployment: each SuperNode names its files with
    `--node-config 'corpus="..." train="..."'`."""
    cfg = context.node_config
    if "corpus" not in cfg or "train" not in cfg:
        raise KeyError("this SuperNode needs --node-config 'corpus=\"...\" train=\"...\"'")
    return cfg["corpus"], load_qa(cfg["train"])


def to_flower(task: FedTask | None, site_data=site_from_node_config, policy=None, plan=None):
    """Return `(client_app, server_app)` for `task` (`None`: read from run_config).
    `plan`: any Strategy object (a composition of stage objects, your own included) to
    federate instead of the task's named one (`task.strategy` may also be an import
    path `"module:attribute"`, for deployment).
    `policy(context) -> SitePolicy` limits the models a site loads (default: its node
    config's `allow-models`, else the bundled models; [`TRUSTED`][fedrag.federation.policy.TRUSTED]
    allows any)."""
    return make_client_app(task, site_data, policy, plan=plan), make_server_app(task, plan)
