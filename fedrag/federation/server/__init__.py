"""The server: what runs in the ServerApp's process, never on a site.

* `server_app`: the Flower ServerApp, and the failure it leaves in OUT/error.json for the
  launcher.
* `run_loop`: the run as objects: `ServerRun` (the whole run: global model, history,
  accountant) runs each phase's `PhaseRun` (its rounds under Flower's strategy).
* `aggregator`: that strategy (FedAvg, FedProx, FedAdam, FedYogi), wrapped in central DP
  when asked, and the run's one RDP accountant.
* `round_recorder`: the strategy wrapper that records each round's metrics, has the sites
  evaluate every N rounds and ends a round short of its quorum.
* `message_audit`: the allow-list every message through the run's Grid passes, both ways.
* `round_checkpoint`: the global tensors, round and ledger after every round (resume).
* `cost_report`: the run's cost.json (bytes moved, time, each phase's settings).

The server uses the wire and the privacy room; it never imports a site's modules.
"""
