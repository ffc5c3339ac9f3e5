"""The strategies compared by Lawton et al. (2025) and RA-DIT (Lin et al. 2023)."""

from __future__ import annotations


from fedrag.errors import FedragError
from fedrag.strategies.base import Phase, Strategy
from fedrag.train.stages import (
    ContrastiveStage,
    LSRStage,
    MultiTaskStage,
    RAGSequenceStage,
    RAGTokenStage,
    RALTStage,
    make_stage,
)


def independent(top_k: int = 3) -> Strategy:
    """Retriever and generator trained separately: RALT on contexts from the *baseline*
    retriever (it runs first, before the retriever changes), then the contrastive
    retriever stage on (question, gold passage) pairs (needs gold ids)."""
    return Strategy("independent", [Phase(RALTStage(top_k=top_k)), Phase(ContrastiveStage(top_k=top_k))], independent.__doc__)


def two_phase(top_k: int = 3, retriever_loss: str = "rag-sequence", order: str = "generator-first") -> Strategy:
    """Generator with the retriever frozen (RAG-Sequence loss), then the retriever with
    the generator frozen (`retriever_loss`: rag-sequence, rag-token or lsr);
    `order="retriever-first"` swaps them."""
    gen = Phase(RAGSequenceStage(top_k=top_k, train_retriever=False))
    if retriever_loss == "rag-sequence":
        ret = Phase(RAGSequenceStage(top_k=top_k, train_generator=False))
    elif retriever_loss == "rag-token":
        ret = Phase(RAGTokenStage(top_k=top_k, train_generator=False))
    elif retriever_loss == "lsr":
        ret = Phase(LSRStage(top_k=top_k))
    else:
        raise FedragError(f"two-phase retriever loss must be rag-sequence, rag-token or lsr, got '{retriever_loss}'")
    if order not in ("generator-first", "retriever-first"):
        raise FedragError(f"two-phase order must be generator-first or retriever-first, got '{order}'")
    phases = [gen, ret] if order == "generator-first" else [ret, gen]
    return Strategy("two-phase", phases, two_phase.__doc__)


def joint_sequence(top_k: int = 3) -> Strategy:
    """Retriever and generator trained together with the RAG-Sequence loss."""
    return Strategy("joint-sequence", [Phase(RAGSequenceStage(top_k=top_k))], joint_sequence.__doc__)


def joint_token(top_k: int = 3) -> Strategy:
    """Retriever and generator trained together with the RAG-Token loss."""
    return Strategy("joint-token", [Phase(RAGTokenStage(top_k=top_k))], joint_token.__doc__)


def ra_dit(top_k: int = 3) -> Strategy:
    """RA-DIT: retrieval-augmented LM fine-tuning (one example per retrieved passage),
    then LM-supervised retrieval with the tuned generator."""
    return Strategy("ra-dit", [Phase(RALTStage(top_k=top_k, mode="per-passage")), Phase(LSRStage(top_k=top_k))], ra_dit.__doc__)


def multi_task(top_k: int = 3) -> Strategy:
    """Generator and retriever in one phase with a multi-task loss: the RALT answer NLL plus
    the contrastive loss of the query encoder, each step (needs gold ids)."""
    return Strategy("multi-task", [Phase(MultiTaskStage(top_k=top_k))], multi_task.__doc__)


STRATEGIES = {
    "independent": independent,
    "two-phase": two_phase,
    "joint-sequence": joint_sequence,
    "joint-token": joint_token,
    "ra-dit": ra_dit,
    "multi-task": multi_task,
}


def make_strategy(name: str, top_k: int = 3, **options) -> Strategy:
    if name not in STRATEGIES:
        raise FedragError(f"unknown strategy '{name}' (choose from {', '.join(STRATEGIES)})")
    return STRATEGIES[name](top_k=top_k, **options)


def custom(name: str, *stages) -> Strategy:
    """Compose a strategy from stage objects (or `(stage, overrides)` pairs)."""
    phases = [Phase(s[0], s[1]) if isinstance(s, tuple) else Phase(s) for s in stages]
    return Strategy(name, phases, "custom composition")


def plan_from_names(
    strategy: str | None,
    stage: str | None,
    top_k: int = 3,
    ralt_mode: str = "all-in-one",
    two_phase_loss: str = "rag-sequence",
    two_phase_order: str = "generator-first",
    train_passages: bool | None = None,
) -> Strategy:
    """A Strategy from a strategy name, or a one-phase one from a stage name (exactly one).

    `train_passages`: None keeps the stage's own default (contrastive trains the passage
    side, LSR does not); True/False applies to a contrastive or LSR stage only."""
    if (strategy is None) == (stage is None):
        raise FedragError("give exactly one of --strategy or --stage")
    if stage:
        if train_passages is not None and stage not in ("contrastive", "lsr"):
            raise FedragError("--train-passages applies to --stage contrastive or --stage lsr")
        opts = {"mode": ralt_mode} if stage == "ralt" else {}
        if stage in ("contrastive", "lsr"):
            opts["train_passages"] = train_passages
        return custom(stage, make_stage(stage, top_k=top_k, **opts))
    if train_passages is not None:
        raise FedragError("--train-passages applies to --stage contrastive or --stage lsr")
    opts = {"retriever_loss": two_phase_loss, "order": two_phase_order} if strategy == "two-phase" else {}
    return make_strategy(strategy, top_k=top_k, **opts)
