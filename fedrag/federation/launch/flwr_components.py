"""Module-level apps for `flwr run` (deployment and `:local:` simulation).

The task comes from the run config (`[tool.flwr.app.config]` / `--run-config`),
each site's data from its SuperNode's `--node-config`.
"""

from fedrag._env import apply_defaults
from fedrag.federation.site.client_app import make_client_app
from fedrag.federation.launch.flower_apps import site_from_node_config
from fedrag.federation.site.policy import app_policy
from fedrag.federation.server.server_app import make_server_app

apply_defaults()
# both are cheap to build: a site's ClientApp process (one per message in deployment) imports
# neither torch nor transformers; the ServerApp loads its models when it runs
client_app = make_client_app(None, site_from_node_config, app_policy)
server_app = make_server_app(None)
