"""The wire: what travels between the server and the sites, the same code at both ends.

* `messages`: the round protocol, typed: what the server asks a site (`RoundInstruction`)
  and what a site reports (`TrainReport`, `EvaluateReport`), each to and from its Flower
  record; the record names and the keys the audit allows.
* `tensors`: named tensors to and from Flower's ArrayRecord, packed one flat array per
  dtype by the phase's layout (`tensor_spec`), and what a message weighs.

The wire imports nothing else of the federation: every other room may use it.
"""
