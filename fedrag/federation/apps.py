"""Module-level apps for ``flwr run`` (deployment and ``:local:`` simulation).

The task comes from the run config (``[tool.flwr.app.config]`` / ``--run-config``),
each site's data from its SuperNode's ``--node-config``.
"""

from fedrag._env import apply_defaults
from fedrag.federation.converter import site_from_node_config, to_flower

apply_defaults()
client_app, server_app = to_flower(None, site_from_node_config)
