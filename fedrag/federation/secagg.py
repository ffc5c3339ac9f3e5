"""Deprecated: secure aggregation moved to `fedrag.federation.privacy.secagg` (issue #40).
Importing this path gives that module, with a DeprecationWarning; the path will be removed."""

from fedrag._lazy import moved_module

moved_module(__name__, "fedrag.federation.privacy.secagg")
