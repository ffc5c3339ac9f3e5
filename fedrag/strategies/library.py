"""The strategies compared by Lawton et al. (2025) and RA-DIT (Lin et al. 2023)."""

from __future__ import annotations

from typing import get_args

from fedrag._settings import check_choice
from fedrag.errors import FedragError
from fedrag.retrieve.choices import TOP_K
from fedrag.strategies.base import Phase, Strategy
from fedrag.strategies.choices import StrategyName, TwoPhaseLoss, TwoPhaseOrder
from fedrag.train.stages import (
    ContrastiveStage,
    LSRStage,
    MultiTaskStage,
    RAGSequenceStage,
    RAGTokenStage,
    RALTStage,
    make_stage,
)


def independent(top_k: int = TOP_K) -> Strategy:
    """Retriever and generator trained separately: RALT on contexts from the *baseline*
    retriever (it runs first, before the retriever changes), then the contrastive
    retriever stage on (question, gold passage) pairs (needs gold ids)."""
    return Strategy("independent", [Phase(RALTStage(top_k=top_k)), Phase(ContrastiveStage(top_k=top_k))], independent.__doc__)


def two_phase(top_k: int = TOP_K, retriever_loss: str = "rag-sequence", order: str = "generator-first") -> Strategy:
    """Generator with the retriever frozen (RAG-Sequence loss), then the retriever with
    the generator frozen (`retriever_loss`: rag-sequence, rag-token or lsr);
    `order="retriever-first"` swaps them."""
    check_choice(retriever_loss, TwoPhaseLoss, "two-phase retriever loss")
    check_choice(order, TwoPhaseOrder, "two-phase order")
    gen = Phase(RAGSequenceStage(top_k=top_k, train_retriever=False))
    if retriever_loss == "lsr":
        ret = Phase(LSRStage(top_k=top_k))
    else:
        ret = Phase(
            {"rag-sequence": RAGSequenceStage, "rag-token": RAGTokenStage}[retriever_loss](top_k=top_k, train_generator=False)
        )
    phases = [gen, ret] if order == "generator-first" else [ret, gen]
    return Strategy("two-phase", phases, two_phase.__doc__)


def joint_sequence(top_k: int = TOP_K) -> Strategy:
    """Retriever and generator trained together with the RAG-Sequence loss."""
    return Strategy("joint-sequence", [Phase(RAGSequenceStage(top_k=top_k))], joint_sequence.__doc__)


def joint_token(top_k: int = TOP_K) -> Strategy:
    """Retriever and generator trained together with the RAG-Token loss."""
    return Strategy("joint-token", [Phase(RAGTokenStage(top_k=top_k))], joint_token.__doc__)


def ra_dit(top_k: int = TOP_K) -> Strategy:
    """RA-DIT: retrieval-augmented LM fine-tuning (one example per retrieved passage),
    then LM-supervised retrieval with the tuned generator."""
    return Strategy("ra-dit", [Phase(RALTStage(top_k=top_k, mode="per-passage")), Phase(LSRStage(top_k=top_k))], ra_dit.__doc__)


def multi_task(top_k: int = TOP_K) -> Strategy:
    """Generator and retriever in one phase with a multi-task loss: the RALT answer NLL plus
    the contrastive loss of the query encoder, each step (needs gold ids)."""
    return Strategy("multi-task", [Phase(MultiTaskStage(top_k=top_k))], multi_task.__doc__)


# the registry, built from the `StrategyName` choices: a name is a factory of the same name here
STRATEGIES = {name: globals()[name.replace("-", "_")] for name in get_args(StrategyName)}


def make_strategy(name: str, top_k: int = TOP_K, **options) -> Strategy:
    check_choice(name, StrategyName, "strategy")
    return STRATEGIES[name](top_k=top_k, **options)


def custom(name: str, *stages) -> Strategy:
    """Compose a strategy from stage objects (or `(stage, overrides)` pairs)."""
    phases = [Phase(s[0], s[1]) if isinstance(s, tuple) else Phase(s) for s in stages]
    return Strategy(name, phases, "custom composition")


def plan_from_names(
    strategy: str | None,
    stage: str | None,
    top_k: int = TOP_K,
    ralt_mode: str = "all-in-one",
    two_phase_loss: str = "rag-sequence",
    two_phase_order: str = "generator-first",
    train_passages: bool | None = None,
) -> Strategy:
    """A Strategy from a strategy name, or a one-phase one from a stage name (exactly one).
    A `strategy` of the form `module:attribute` is imported: a Strategy, or a callable
    returning one, called with `top_k`.

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
    if ":" in strategy:  # a user's own, as Flower names its apps
        from fedrag.strategies.by_path import import_strategy

        return import_strategy(strategy, top_k)
    opts = {"retriever_loss": two_phase_loss, "order": two_phase_order} if strategy == "two-phase" else {}
    return make_strategy(strategy, top_k=top_k, **opts)
