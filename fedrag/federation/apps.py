"""Module-level apps for `flwr run` (deployment and `:local:` simulation).

The task comes from the run config (`[tool.flwr.app.config]` / `--run-config`),
each site's data from its SuperNode's `--node-config`.
"""

from fedrag._env import apply_defaults

apply_defaults()


def __getattr__(name: str):
    # each app is built on first use: a site's ClientApp process (one per message in
    # deployment) then imports neither the server nor torch
    if name == "client_app":
        from fedrag.federation.client import make_client_app
        from fedrag.federation.converter import site_from_node_config
        from fedrag.federation.policy import app_policy

        value = make_client_app(None, site_from_node_config, app_policy)
    elif name == "server_app":
        from fedrag.federation.server import make_server_app

        value = make_server_app(None)
    else:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    globals()[name] = value
    return value
