"""Deprecated: the ServerApp and ClientApp `flwr run` loads (an app written by an older `fedrag app` names this path) moved to `fedrag.federation.launch.flwr_components` (issue #40).
Importing this path gives that module, with a DeprecationWarning; the path will be removed."""

from fedrag._lazy import moved_module

moved_module(__name__, "fedrag.federation.launch.flwr_components")
