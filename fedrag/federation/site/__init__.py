"""A site: what runs where a site's data lives (its SuperNode's ClientApp processes, its
resident worker, or a simulation's Ray actor), never on the server.

* `client_app`: the Flower ClientApp: checks the site's policy and runs the round, in the
  resident worker when the node config names one. It imports neither torch nor the models.
* `local_round`: a round on the site's models: train the phase's stage, or evaluate it,
  from the global tensors a message carries.
* `resident_worker`: the process that keeps the models loaded across a deployment's rounds
  (`python -m fedrag.federation.site.resident_worker SOCKET`).
* `policy`: the site's own policy: which models and strategies a run may load here, and
  the fedrag version it must come from.

A site uses the wire and the privacy room; it never imports the server's modules.
"""
