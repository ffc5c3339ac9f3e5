"""Launching a run: what the process that starts a federation uses (`fedrag federate`,
[`simulate`][fedrag.federation.launch.simulation.simulate],
[`deploy`][fedrag.federation.launch.deployment.deploy], `flwr run`).

* `flower_apps`: `to_flower`, a task as `(ClientApp, ServerApp)`, and where each site's
  data comes from (a simulation's paths, a SuperNode's node config).
* `flwr_components`: the module-level ServerApp and ClientApp that `flwr run` loads (the
  `[tool.flwr.app.components]` of the app `fedrag app` writes).
* `app_pyproject`: that app's pyproject.toml, written from `FedTask`'s fields.
* `simulation`: a run in Flower's Simulation Engine (Ray), all on 127.0.0.1.
* `deployment`: a real deployment on 127.0.0.1 (SuperLink, one SuperNode and resident
  worker per site), and a run submitted to a remote SuperLink.
* `processes`: free loopback ports, and a process's descendants (stopped by PID).
* `credentials`: TLS certificates and SuperNode keys for a secure deployment.

Launch is the top room: it may use every other; none uses it.
"""
