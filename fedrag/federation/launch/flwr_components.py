"""Module-level apps for `flwr run` (deployment and `:local:` simulation).

The task comes from the run config (`[tool.flwr.app.config]` / `--run-config`),
each site's data from its SuperNode's `--node-config`.
"""

from fedrag._env import apply_defaults
from fedrag.federation.site.client_app import make_client_app
from fedrag.federation.launch.flower_apps import site_from_node_config
from fedrag.federation.site.policy import app_policy

apply_defaults()
# a site's ClientApp process (one per message in deployment) imports neither torch nor
# transformers: the ServerApp's modules (which do) load only when Flower asks for `server_app`
client_app = make_client_app(None, site_from_node_config, app_policy)
__all__ = ["client_app", "server_app"]  # noqa: F822 - Flower reads the source for the names; server_app is made on first use


def __getattr__(name: str):
    if name != "server_app":
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    from fedrag.federation.server.server_app import make_server_app

    globals()["server_app"] = app = make_server_app(None)
    return app
