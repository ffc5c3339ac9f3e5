"""The built-in training stages: each declares what it trains and computes one batch's loss.

Each satisfies [`fedrag.train.protocol.Stage`][fedrag.train.protocol.Stage] (`name`, `trains`,
`loss(rag, batch) -> StepOutput`). The loop ([`fedrag.train.loop`][fedrag.train.loop]) freezes
everything else, so a frozen side's weights stay bit-identical. The same objects run
centrally and, one round at a time, inside a Flower client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from fedrag._settings import check_choice
from fedrag.data.types import Example
from fedrag.errors import FedragError
from fedrag.generate.decoding import RETRIEVAL_GAMMA
from fedrag.retrieve.choices import TOP_K
from fedrag.losses import answer_nll, info_nce, lsr_loss, rag_sequence_nll, rag_token_nll
from fedrag.train.choices import RaltMode, StageName
from fedrag.train.protocol import StepOutput
from fedrag.train.scoring import embed_passages, passages_at, retrieve_scores

if TYPE_CHECKING:
    from fedrag.rag import RAGSystem


@dataclass
class ContrastiveStage:
    """Retriever, contrastive with context labels: (question, gold passage) pairs,
    in-batch negatives + `hard_negatives` mined from the index per question.

    `train_passages=True` (needs a retriever loaded with `shared=True`) also trains
    the passage encoder: passages are re-embedded with gradients each step, and the
    store must be re-encoded afterwards ([`fedrag.rag.RAGSystem.reencode_store`][fedrag.rag.RAGSystem.reencode_store])."""

    name: ClassVar[str] = "contrastive"
    trains: ClassVar[tuple[str, ...]] = ("retriever",)
    # measured (docs/results.md, benchmarks/contrastive_defaults.py): the query side alone did not raise
    # Recall@5 on SQuAD or HotpotQA; the passage side at batch 16, lr 5e-5 did. Training settings the
    # stage prefers, applied by Phase.config wherever the stage runs unless the user set them.
    defaults: ClassVar[dict] = {"batch_size": 16, "lr_retriever": 5e-5, "min_steps": 20}
    hard_negatives: int = 1
    scale: float = 20.0
    top_k: int = TOP_K
    train_passages: bool = True

    @property
    def needs_shared_retriever(self) -> bool:
        """Training the passage side needs one encoder for questions and passages."""
        return self.train_passages

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput:
        if not all(e.gold_ids for e in batch):
            raise FedragError("the contrastive stage needs gold passage ids ('gold_ids') for every training example")
        q, tokens = rag.retriever.embed_queries([e.question for e in batch], grad=True)
        # one (question, gold) pair per gold passage: multi-hop questions have several
        pairs = [(i, rag.store.position(g)) for i, e in enumerate(batch) for g in dict.fromkeys(e.gold_ids)]
        owner, gold = [i for i, _ in pairs], [p for _, p in pairs]
        neg: list[int] = []
        if self.hard_negatives:
            _, pos = rag.store.search(q.detach(), self.hard_negatives + max(len(e.gold_ids) for e in batch) + 1)
            for e, row in zip(batch, pos):
                golds = {rag.store.position(g) for g in e.gold_ids}
                neg += [p for p in row if p not in golds][: self.hard_negatives]
        if self.train_passages:
            enc, passage_tokens = embed_passages(rag, gold + neg)
            tokens += passage_tokens
            positives, negatives = enc[: len(gold)], (enc[len(gold) :] if neg else None)
        else:
            positives = rag.store.rows(gold, q.device)
            negatives = rag.store.rows(neg, q.device) if neg else None
        # a question's other golds (and the same passage as another pair's positive) are not its negatives
        golds_of = [{rag.store.position(g) for g in e.gold_ids} for e in batch]
        candidates = gold + neg
        exclude = torch.tensor([[c in golds_of[i] for c in candidates] for i in owner], device=q.device)
        loss = info_nce(q[torch.as_tensor(owner, device=q.device)], positives, negatives, self.scale, exclude)
        return StepOutput(loss, retriever_tokens=tokens, retriever_grad=True, units=len(owner))


@dataclass
class LSRStage:
    """Retriever, LM-supervised (RA-DIT/REPLUG): KL(p_LM ‖ p_R) over the top-k.

    `train_passages=True` (shared retriever) also trains the passage encoder: the
    top-k passages are re-embedded with gradients, and the store must be re-encoded
    afterwards, as for [`ContrastiveStage`][ContrastiveStage]."""

    name: ClassVar[str] = "lsr"
    trains: ClassVar[tuple[str, ...]] = ("retriever",)
    # measured (docs/results.md, "LSR-stage defaults"): with the untuned LM as teacher LSR moved
    # HotpotQA's Recall@5 by -1 question and SQuAD's by +11 / -10: little to learn, so the stage
    # keeps its validated best, the weights before the first step included
    defaults: ClassVar[dict] = {"keep_best": True}
    top_k: int = TOP_K
    gamma: float = RETRIEVAL_GAMMA
    tau: float = 1.0
    train_passages: bool = False

    @property
    def needs_shared_retriever(self) -> bool:
        """Training the passage side needs one encoder for questions and passages."""
        return self.train_passages

    def scores(self, rag: RAGSystem, batch: list[Example], grad: bool = True):
        """The two sides of the loss over each question's top-k: retriever scores `[B, k]`
        (with gradients when `grad`), the LM's log p(answer | passage, question) `[B, k]`
        (no gradients), the store positions, the LM's [`AnswerScores`][fedrag.generate.generator.AnswerScores] and the
        retriever's token count."""
        questions = [e.question for e in batch]
        scores, pos, rtok = retrieve_scores(rag, questions, self.top_k, grad=grad, train_passages=self.train_passages and grad)
        gen = rag.generator
        prompts = [gen.prompt(q, [p]) for q, ps in zip(questions, passages_at(rag, pos)) for p in ps]
        answers = [e.answers[0] for e in batch for _ in range(scores.shape[1])]
        with torch.no_grad():
            lm = gen.score(prompts, answers)
        return scores, lm.seq_logp.view_as(scores), pos, lm, rtok

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput:
        scores, lm_logp, _, lm, rtok = self.scores(rag, batch)
        loss = lsr_loss(scores, lm_logp, self.gamma, self.tau)
        return StepOutput(loss, retriever_tokens=rtok, generator_tokens=lm.n_tokens, retriever_grad=True)


@dataclass
class RALTStage:
    """Generator, retrieval-augmented fine-tuning: NLL of the answer tokens only.

    `mode="per-passage"`: one example per retrieved passage (RA-DIT);
    `mode="all-in-one"`: all top-k passages in one prompt (Lawton et al. 2025).
    Retrieval uses the current retriever without gradients."""

    name: ClassVar[str] = "ralt"
    trains: ClassVar[tuple[str, ...]] = ("generator",)
    top_k: int = TOP_K
    mode: RaltMode = "all-in-one"
    gamma: float = RETRIEVAL_GAMMA  # per-passage mode: retrieval temperature of the REPLUG-style ensemble at decoding

    @property
    def decoding(self) -> dict:
        """The decoding that matches this training: all passages in one prompt → concat;
        one passage per example → the per-token ensemble over passages (RA-DIT/REPLUG)."""
        return {"decoding": "concat" if self.mode == "all-in-one" else "rag-token", "gamma": self.gamma}

    def __post_init__(self):
        check_choice(self.mode, RaltMode, "RALT mode")

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput:
        questions = [e.question for e in batch]
        q, rtok = rag.retriever.embed_queries(questions)
        _, pos = rag.store.search(q, self.top_k)
        gen, contexts = rag.generator, passages_at(rag, pos)
        if self.mode == "per-passage":
            prompts = [gen.prompt(q, [p]) for q, ps in zip(questions, contexts) for p in ps]
            answers = [e.answers[0] for e, ps in zip(batch, contexts) for _ in ps]
        else:
            prompts = [gen.prompt(q, ps) for q, ps in zip(questions, contexts)]
            answers = [e.answers[0] for e in batch]
        out = gen.score(prompts, answers)
        loss = answer_nll(out.seq_logp, out.mask.sum(-1))
        return StepOutput(
            loss,
            retriever_tokens=rtok,
            generator_tokens=out.n_tokens,
            generator_grad=True,
            units=float(out.mask.sum().clamp(min=1)),
        )


@dataclass
class _JointStage:
    # no stage defaults, measured (docs/results.md, benchmarks/rag_retriever_lr.py): with an untuned
    # generator no retriever rate let the RAG loss lift Recall@5; above TrainConfig's 2e-5 it fell
    top_k: int = TOP_K
    gamma: float = RETRIEVAL_GAMMA  # p(z|x) = softmax(cosine / gamma); see fedrag.generate.decoding
    train_retriever: bool = True
    train_generator: bool = True

    @property
    def trains(self) -> tuple[str, ...]:
        return tuple(n for n, on in (("retriever", self.train_retriever), ("generator", self.train_generator)) if on)

    def _forward(self, rag: RAGSystem, batch: list[Example]):
        if not self.trains:
            raise FedragError(f"stage {self.name} with both sides frozen trains nothing")
        questions = [e.question for e in batch]
        scores, pos, rtok = retrieve_scores(rag, questions, self.top_k, grad=self.train_retriever)
        gen = rag.generator
        prompts = [gen.prompt(q, [p]) for q, ps in zip(questions, passages_at(rag, pos)) for p in ps]
        answers = [e.answers[0] for e in batch for _ in range(scores.shape[1])]
        with torch.set_grad_enabled(self.train_generator):
            out = gen.score(prompts, answers)
        return scores, out, rtok

    def _output(self, loss, scores, out, rtok) -> StepOutput:
        return StepOutput(
            loss,
            retriever_tokens=rtok,
            generator_tokens=out.n_tokens,
            retriever_grad=self.train_retriever,
            generator_grad=self.train_generator,
        )


@dataclass
class RAGSequenceStage(_JointStage):
    """Joint RAG-Sequence: -log Σ_z p_η(z|x) p_θ(y|x,z); either side can be frozen."""

    name: ClassVar[str] = "rag-sequence"

    @property
    def decoding(self) -> dict:
        return {"decoding": "rag-sequence", "gamma": self.gamma}

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput:
        scores, out, rtok = self._forward(rag, batch)
        loss = rag_sequence_nll(scores, out.seq_logp.view_as(scores), self.gamma)
        return self._output(loss, scores, out, rtok)


@dataclass
class RAGTokenStage(_JointStage):
    """Joint RAG-Token: -Σ_i log Σ_z p_η(z|x) p_θ(y_i|x,z,y_<i); either side can be frozen."""

    name: ClassVar[str] = "rag-token"

    @property
    def decoding(self) -> dict:
        return {"decoding": "rag-token", "gamma": self.gamma}

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput:
        scores, out, rtok = self._forward(rag, batch)
        b, k = scores.shape
        token_logp = out.token_logp.view(b, k, -1)
        loss = rag_token_nll(scores, token_logp, out.mask.view(b, k, -1)[:, 0], self.gamma)
        return self._output(loss, scores, out, rtok)


@dataclass
class MultiTaskStage:
    r"""Generator and retriever in one step: a weighted sum of the RALT answer NLL and the
    contrastive InfoNCE loss on the same batch,

    $$
    \mathcal{L} = w_\text{gen}\,\mathcal{L}_\text{RALT} + w_\text{ret}\,\mathcal{L}_\text{InfoNCE}.
    $$

    The contrastive half needs gold passage ids and trains the query side only, so the
    RALT half retrieves from a store that stays current. The generator is decoded as a
    RALT-trained one (passages concatenated)."""

    name: ClassVar[str] = "multi-task"
    trains: ClassVar[tuple[str, ...]] = ("retriever", "generator")
    top_k: int = TOP_K
    generation_weight: float = 1.0
    retrieval_weight: float = 1.0
    hard_negatives: int = 1

    def __post_init__(self):
        weights = (self.generation_weight, self.retrieval_weight)
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise FedragError(f"multi-task weights must be finite, >= 0 and not both 0, got {weights}")

    def loss(self, rag: RAGSystem, batch: list[Example]) -> StepOutput:
        gen = RALTStage(top_k=self.top_k).loss(rag, batch)
        ret = ContrastiveStage(hard_negatives=self.hard_negatives, top_k=self.top_k, train_passages=False).loss(rag, batch)
        return StepOutput(
            self.generation_weight * gen.loss + self.retrieval_weight * ret.loss,
            retriever_tokens=gen.retriever_tokens + ret.retriever_tokens,
            generator_tokens=gen.generator_tokens,
            retriever_grad=True,
            generator_grad=True,
        )


STAGES = {s.name: s for s in (ContrastiveStage, LSRStage, RALTStage, RAGSequenceStage, RAGTokenStage, MultiTaskStage)}


def make_stage(name: str, **options):
    """A stage by name (`contrastive`, `lsr`, `ralt`, `rag-sequence`, `rag-token`, `multi-task`)."""
    check_choice(name, StageName, "stage")
    cls = STAGES[name]
    fields = [f for f in cls.__dataclass_fields__ if not f.startswith("_")]
    unknown = sorted(k for k in options if k not in fields)
    if unknown:
        raise FedragError(f"stage '{name}' has no option '{unknown[0]}' (its options: {', '.join(sorted(fields))})")
    return cls(**{k: v for k, v in options.items() if v is not None})  # None: the stage's own default
