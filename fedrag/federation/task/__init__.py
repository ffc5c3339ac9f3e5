"""The federated task ([`FedTask`][fedrag.federation.task.fed_task.FedTask]) and the parts it is
composed of ([`fedrag.federation.task.parts`][fedrag.federation.task.parts]): what a ServerApp
and a ClientApp need, frozen, and flat as a Flower run config."""

from fedrag.federation.task.fed_task import FedTask
from fedrag.federation.task.parts import (
    AGGREGATION,
    AGGREGATORS,
    EVALUATION,
    MODELS,
    TRAINING,
    Aggregation,
    Aggregator,
    Models,
    Privacy,
    RunSettings,
    SiteTraining,
)

__all__ = [
    "AGGREGATION",
    "AGGREGATORS",
    "EVALUATION",
    "MODELS",
    "TRAINING",
    "Aggregation",
    "Aggregator",
    "FedTask",
    "Models",
    "Privacy",
    "RunSettings",
    "SiteTraining",
]
