"""Deprecated: local differential privacy moved to `fedrag.federation.privacy.local_dp` (issue #40).
Importing this path gives that module, with a DeprecationWarning; the path will be removed."""

from fedrag._lazy import moved_module

moved_module(__name__, "fedrag.federation.privacy.local_dp")
