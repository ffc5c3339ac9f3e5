"""Privacy: the protections a run can add, at both ends, and what they covered.

* `local_dp`: local differential privacy: a site clips and noises its update before it
  leaves, and keeps its own ledger (runs on the site).
* `secagg`: secure aggregation, Flower's SecAgg+ under fedrag's strategies (the server's
  workflow and the site's mod).
* `central_dp`: central differential privacy: Flower's client-side-clipping wrapper with
  every site weighted equally and the noise divided by the sites aggregated (the server's
  aggregator, `fedrag.federation.server.aggregator`, wraps its strategy in it).
* `coverage`: what the protections covered: cost.json's `dp`, `local_dp` and
  `secure_aggregation` sections and the run's privacy.md (written by the server).

Privacy uses only the wire and the task. Until the old path goes, the names of the module this package
replaced (`privacy_sections`, `privacy_markdown`, ...) resolve here from `coverage`, with a
DeprecationWarning.
"""

import importlib
import warnings

_MOVED = ("NOT_COVERED", "dp_report", "local_dp_report", "privacy_markdown", "privacy_sections", "secagg_report")


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{__name__}.{name} moved to {__name__}.coverage.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f"{__name__}.coverage"), name)
