"""Federation: the converter from fedrag strategies to Flower apps, and the launchers.

* [`FedTask`][FedTask]: the federated run (models, strategy, rounds, aggregator, DP).
* [`to_flower`][to_flower]: `(ClientApp, ServerApp)` for a task.
* [`simulate`][simulate]: run it in Flower's Simulation Engine; [`deploy`][deploy]: on a local
  SuperLink + one SuperNode per site (see docs/federation.md for real sites).
"""

from typing import TYPE_CHECKING

from fedrag._lazy import lazy_exports

if TYPE_CHECKING:  # the names below load on first use: a site's ClientApp imports this package without torch
    from fedrag.federation.converter import site_from_node_config, sites_from_paths, to_flower
    from fedrag.federation.deployment import LocalDeployment, deploy
    from fedrag.federation.simulation import simulate
    from fedrag.federation.task import FedTask

__all__ = ["FedTask", "LocalDeployment", "deploy", "simulate", "site_from_node_config", "sites_from_paths", "to_flower"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **{n: "fedrag.federation.converter" for n in ("site_from_node_config", "sites_from_paths", "to_flower")},
        "LocalDeployment": "fedrag.federation.deployment",
        "deploy": "fedrag.federation.deployment",
        "simulate": "fedrag.federation.simulation",
        "FedTask": "fedrag.federation.task",
    },
)
