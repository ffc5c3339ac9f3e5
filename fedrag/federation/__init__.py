"""Federation: the converter from fedrag strategies to Flower apps, and the launchers.

* [`FedTask`][FedTask]: the federated run (models, strategy, rounds, aggregator, DP).
* [`to_flower`][to_flower]: `(ClientApp, ServerApp)` for a task.
* [`simulate`][simulate]: run it in Flower's Simulation Engine; [`deploy`][deploy]: on a local
  SuperLink + one SuperNode per site (see docs/federation.md for real sites).

The code lives in rooms, by where it runs; imports go down this list (`tests/test_layout.py`):
`task.py` and `wire/` (what travels: the round's messages and tensors, both ends), `privacy/`
(local DP, secure aggregation, the privacy report), `server/` (the ServerApp's process) and
`site/` (a site's processes), which never import each other, and `launch/` (`to_flower`,
simulation, deployment, the Flower app). The other modules here are deprecated aliases of
moved ones.
"""

from typing import TYPE_CHECKING

from fedrag._lazy import lazy_exports

if TYPE_CHECKING:  # the names below load on first use: a site's ClientApp imports this package without torch
    from fedrag.federation.launch.flower_apps import site_from_node_config, sites_from_paths, to_flower
    from fedrag.federation.launch.deployment import LocalDeployment, deploy
    from fedrag.federation.launch.simulation import simulate
    from fedrag.federation.task import FedTask

__all__ = ["FedTask", "LocalDeployment", "deploy", "simulate", "site_from_node_config", "sites_from_paths", "to_flower"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **{n: "fedrag.federation.launch.flower_apps" for n in ("site_from_node_config", "sites_from_paths", "to_flower")},
        "LocalDeployment": "fedrag.federation.launch.deployment",
        "deploy": "fedrag.federation.launch.deployment",
        "simulate": "fedrag.federation.launch.simulation",
        "FedTask": "fedrag.federation.task",
    },
)
