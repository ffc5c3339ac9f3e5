"""Training: the Stage protocol, built-in stages (one loss each), the shared loop, cost accounting, trainable state."""

from typing import TYPE_CHECKING

from fedrag._lazy import lazy_exports

if TYPE_CHECKING:  # the names below load on first use
    from fedrag.train.config import TrainConfig
    from fedrag.train.loop import StageResult, train_stage
    from fedrag.train.protocol import Stage, StepOutput
    from fedrag.train.stages import (
        STAGES,
        ContrastiveStage,
        LSRStage,
        MultiTaskStage,
        RAGSequenceStage,
        RAGTokenStage,
        RALTStage,
        make_stage,
    )
    from fedrag.train.state import get_state, set_state

__all__ = [
    "STAGES",
    "ContrastiveStage",
    "LSRStage",
    "MultiTaskStage",
    "RAGSequenceStage",
    "RAGTokenStage",
    "RALTStage",
    "Stage",
    "StageResult",
    "StepOutput",
    "TrainConfig",
    "get_state",
    "make_stage",
    "set_state",
    "train_stage",
]
_STAGES = ("STAGES", "ContrastiveStage", "LSRStage", "MultiTaskStage", "RAGSequenceStage", "RAGTokenStage", "RALTStage")
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "fedrag.train.config",
        "StageResult": "fedrag.train.loop",
        "train_stage": "fedrag.train.loop",
        "Stage": "fedrag.train.protocol",
        "StepOutput": "fedrag.train.protocol",
        "make_stage": "fedrag.train.stages",
        **{n: "fedrag.train.stages" for n in _STAGES},
        "get_state": "fedrag.train.state",
        "set_state": "fedrag.train.state",
    },
)
