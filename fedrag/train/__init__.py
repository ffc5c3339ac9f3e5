"""Training: the Stage protocol, built-in stages (one loss each), the shared loop, cost accounting, trainable state."""

from fedrag.train.loop import StageResult, TrainConfig, train_stage
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
