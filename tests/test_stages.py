from pathlib import Path

import numpy as np
import pytest
import torch

from fedrag.data import load_corpus, load_qa
from fedrag.generate import Generator
from fedrag.losses import lsr_loss, rag_sequence_nll, rag_token_nll
from fedrag.rag import RAGSystem
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher
from fedrag.train import (
    ContrastiveStage,
    LSRStage,
    RAGSequenceStage,
    RAGTokenStage,
    RALTStage,
    TrainConfig,
    get_state,
    train_stage,
)
from fedrag.train.scoring import retrieve_scores


def make_rag(tiny_models, demo_dir, lora=True):
    retriever = Retriever.load(tiny_models["retriever"])
    store = KnowledgeStore.build(load_corpus(demo_dir / "corpus.jsonl"), retriever)
    gen = Generator.load(tiny_models["generator"], lora=lora)
    return RAGSystem(Searcher(store, retriever), gen, top_k=3)


@pytest.fixture
def rag(tiny_models, demo_dir):
    return make_rag(tiny_models, demo_dir)


@pytest.fixture(scope="module")
def train(demo_dir):
    return load_qa(demo_dir / "train.jsonl")


def test_rag_losses_with_k1_equal_answer_nll(rag, train):
    batch = train[:3]
    for stage_cls in (RAGSequenceStage, RAGTokenStage):
        stage = stage_cls(top_k=1)
        got = stage.loss(rag, batch).loss
        scores, pos, _ = retrieve_scores(rag, [e.question for e in batch], 1, grad=False)
        prompts = [rag.generator.prompt(e.question, [rag.store.passages[p[0]]]) for e, p in zip(batch, pos)]
        nll = -rag.generator.score(prompts, [e.answers[0] for e in batch]).seq_logp.mean()
        assert got.item() == pytest.approx(nll.item(), rel=1e-5)


def test_rag_losses_match_slow_reference():
    """At the default retrieval temperature (RETRIEVAL_GAMMA, the decodings' too)."""
    from fedrag.generate.decoding import RETRIEVAL_GAMMA

    torch.manual_seed(0)
    scores, tok = torch.randn(2, 3) * RETRIEVAL_GAMMA, torch.randn(2, 3, 4).clamp(max=0) - 0.1
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    tok = tok * mask[:, None, :]
    seq_ref, token_ref = 0.0, 0.0
    for b in range(2):
        prior = torch.softmax(scores[b] / RETRIEVAL_GAMMA, 0)
        seq_ref -= torch.log(sum(prior[z] * tok[b, z].sum().exp() for z in range(3)))
        for t in range(4):
            if mask[b, t]:
                token_ref -= torch.log(sum(prior[z] * tok[b, z, t].exp() for z in range(3)))
    assert rag_sequence_nll(scores, tok.sum(-1)).item() == pytest.approx(seq_ref.item() / 2, rel=1e-5)
    assert rag_token_nll(scores, tok, mask).item() == pytest.approx(token_ref.item() / 2, rel=1e-5)
    p_r, p_lm = torch.softmax(scores / 0.1, -1), torch.softmax(tok.sum(-1), -1)
    kl = (p_lm * (p_lm.log() - p_r.log())).sum(-1).mean()
    assert lsr_loss(scores, tok.sum(-1), gamma=0.1).item() == pytest.approx(kl.item(), rel=1e-5)


@pytest.mark.parametrize(
    "stage,frozen",
    [
        (RAGSequenceStage(top_k=2, train_retriever=False), "retriever"),
        (RAGSequenceStage(top_k=2, train_generator=False), "generator"),
        (RAGTokenStage(top_k=2, train_generator=False), "generator"),
        (RALTStage(top_k=2), "retriever"),
    ],
)
def test_frozen_side_is_bit_identical_and_trained_side_moves(tiny_models, demo_dir, train, stage, frozen):
    rag = make_rag(tiny_models, demo_dir, lora=False)
    before_r = {k: v.clone() for k, v in rag.retriever.query_encoder.state_dict().items()}
    before_g = {k: v.clone() for k, v in rag.generator.model.state_dict().items()}
    train_stage(stage, rag, train, TrainConfig(steps=2, batch_size=2, lr_generator=1e-2, lr_retriever=1e-2))
    after_r, after_g = rag.retriever.query_encoder.state_dict(), rag.generator.model.state_dict()
    same_r = all(torch.equal(before_r[k], after_r[k]) for k in before_r)
    same_g = all(torch.equal(before_g[k], after_g[k]) for k in before_g)
    assert (same_r, same_g) == ((True, False) if frozen == "retriever" else (False, True))


def test_lsr_updates_the_retriever_and_lowers_its_loss(rag, train):
    stage = LSRStage(top_k=4, gamma=0.1)
    batch = train[:8]
    before = get_state(rag, ("retriever",))
    with torch.no_grad():
        loss0 = stage.loss(rag, batch).loss.item()
    train_stage(stage, rag, batch, TrainConfig(steps=15, batch_size=8, lr_retriever=1e-3, warmup_ratio=0))
    after = get_state(rag, ("retriever",))
    moved = sum((after[k] - before[k]).abs().sum().item() for k in before)
    with torch.no_grad():
        loss1 = stage.loss(rag, batch).loss.item()
    assert moved > 0, "LSR must update the query encoder"
    assert loss1 < loss0, (loss0, loss1)


def test_ralt_puts_loss_on_answer_tokens_only(rag, train):
    """Our loss equals HF's causal-LM loss with prompt labels masked to -100, and
    differs from the loss over all tokens: prompt/context tokens carry no loss."""
    stage = RALTStage(top_k=2, mode="all-in-one")
    batch = train[:1]
    ours = stage.loss(rag, batch).loss.item()
    _, pos = rag.store.search(rag.retriever.encode_queries([batch[0].question]), 2)
    gen = rag.generator
    prompt = gen.token_ids(gen.prompt(batch[0].question, [rag.store.passages[p] for p in pos[0]]))
    answer = gen.answer_ids(batch[0].answers[0])
    ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    masked = gen.model(input_ids=ids, labels=labels).loss.item()
    full = gen.model(input_ids=ids, labels=ids).loss.item()
    assert ours == pytest.approx(masked, rel=1e-5)
    assert abs(ours - full) > 1e-3
    assert RALTStage(top_k=2, mode="per-passage").loss(rag, batch).loss.item() > 0


def test_contrastive_raises_recall_on_training_questions(rag, train):
    from fedrag.evaluate import evaluate

    subset = train[:24]
    view = RAGSystem(rag.searcher, None, top_k=5)
    r0 = evaluate(view, subset, progress=False)["recall@1"]
    train_stage(
        ContrastiveStage(hard_negatives=1, train_passages=False),
        rag,
        subset,
        TrainConfig(steps=30, batch_size=8, lr_retriever=3e-3, warmup_ratio=0),
    )
    r1 = evaluate(view, subset, progress=False)["recall@1"]
    assert r1 > r0, (r0, r1)


class Interrupt(Exception):
    pass


class StopAfter:
    """The real RALT stage, interrupted (as by a crash) after ``n`` loss calls."""

    def __init__(self, stage, n):
        self.stage, self.n, self.name, self.trains = stage, n, stage.name, stage.trains

    def loss(self, rag, batch):
        if self.n == 0:
            raise Interrupt
        self.n -= 1
        return self.stage.loss(rag, batch)


def test_training_is_reproducible_and_resumable(tiny_models, demo_dir, train, tmp_path):
    cfg = TrainConfig(steps=4, batch_size=2, lr_generator=1e-2, checkpoint_every=2, seed=3)
    a = make_rag(tiny_models, demo_dir)
    train_stage(RALTStage(top_k=2), a, train, cfg, out_dir=tmp_path / "a")
    b = make_rag(tiny_models, demo_dir)
    train_stage(RALTStage(top_k=2), b, train, cfg)
    sa, sb = get_state(a, ("generator",)), get_state(b, ("generator",))
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "same seed must give the same weights"
    c = make_rag(tiny_models, demo_dir)
    with pytest.raises(Interrupt):
        train_stage(StopAfter(RALTStage(top_k=2), 3), c, train, cfg, out_dir=tmp_path / "c")
    d = make_rag(tiny_models, demo_dir)
    counted = StopAfter(RALTStage(top_k=2), 100)
    res = train_stage(counted, d, train, cfg, out_dir=tmp_path / "c", resume=True)
    assert counted.n == 98, "resumed from the step-2 checkpoint: 2 steps trained"
    assert res.cost.steps == 4, "the cost is the whole run's"
    sd = get_state(d, ("generator",))
    assert all(torch.allclose(sa[k], sd[k], atol=1e-6) for k in sa)


def test_contrastive_can_train_the_passage_encoder_and_reencode(tiny_models, demo_dir, train):
    from fedrag.pipeline import build_training_rag

    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], "none", shared_retriever=True)
    before = rag.store.embeddings.copy()
    train_stage(
        ContrastiveStage(train_passages=True),
        rag,
        train[:16],
        TrainConfig(steps=3, batch_size=8, lr_retriever=1e-2, warmup_ratio=0),
    )
    cost = rag.reencode_store()
    assert cost["reencoded_passages"] == len(before) and cost["reencode_s"] > 0
    assert not np.allclose(before, rag.store.embeddings), "the store reflects the trained passage encoder"


def test_lsr_can_train_the_passage_encoder(tiny_models, demo_dir, train):
    """With train_passages the top-k are re-embedded with gradients: same scores as the
    store's (eval mode), but the gradient also flows through the passage side."""
    from fedrag.pipeline import build_training_rag

    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], "none", shared_retriever=True)
    enc, questions = rag.retriever.query_encoder, [e.question for e in train[:4]]
    enc.eval()
    grads, ref, ref_pos = [], None, None
    for passages in (False, True):
        enc.zero_grad()
        scores, pos, _ = retrieve_scores(rag, questions, 3, grad=True, train_passages=passages)
        scores.logsumexp(-1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in enc.parameters() if p.grad is not None]))
        if passages:
            assert torch.allclose(scores, ref, atol=1e-5) and pos == ref_pos
        ref, ref_pos = scores.detach(), pos
    assert not torch.allclose(grads[0], grads[1]), "the passage side must carry gradient"

    rag = build_training_rag(
        str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], shared_retriever=True
    )
    stage, before = LSRStage(top_k=4, train_passages=True), rag.store.embeddings.copy()
    rag.retriever.query_encoder.eval()
    with torch.no_grad():
        loss0 = stage.loss(rag, train[:8]).loss.item()
    train_stage(stage, rag, train[:8], TrainConfig(steps=15, batch_size=8, lr_retriever=1e-3, warmup_ratio=0))
    rag.reencode_store()
    assert not np.allclose(before, rag.store.embeddings), "the passage encoder moved"
    rag.retriever.query_encoder.eval()
    with torch.no_grad():
        loss1 = LSRStage(top_k=4).loss(rag, train[:8]).loss.item()
    assert loss1 < loss0, (loss0, loss1)


def test_info_nce_with_several_golds_matches_a_slow_reference():
    """Question 0 has two golds (pairs 0 and 1): each pair's denominator leaves out the
    question's other gold; question 1's single gold is a negative for both."""
    from fedrag.losses import info_nce

    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    cands = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)  # 3 positives + 1 hard negative
    owner, rows = [0, 0, 1], q[[0, 0, 1]]
    exclude = torch.tensor([[True, True, False, False], [True, True, False, False], [False, False, True, False]])
    got = info_nce(rows, cands[:3], cands[3:], scale=5.0, exclude=exclude)
    ref = 0.0
    for i, qi in enumerate(owner):
        keep = [c for c in range(4) if c == i or not exclude[i, c]]
        logits = torch.stack([5.0 * q[qi] @ cands[c] for c in keep])
        ref -= torch.log_softmax(logits, 0)[keep.index(i)]
    assert got.item() == pytest.approx(ref.item() / 3, rel=1e-5)
    plain = info_nce(rows, cands[:3], cands[3:], scale=5.0)
    assert plain.item() != pytest.approx(got.item(), rel=1e-3), "the mask matters here"


class _Payload:
    """A pickle that runs code when loaded: what a tampered optimizer.pt could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_code_from_a_checkpoint(tiny_models, demo_dir, train, tmp_path):
    from fedrag.errors import FedragError

    cfg = TrainConfig(steps=2, batch_size=2, checkpoint_every=1, seed=3)
    with pytest.raises(Interrupt):
        train_stage(StopAfter(RALTStage(top_k=2), 1), make_rag(tiny_models, demo_dir), train, cfg, out_dir=tmp_path / "r")
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": _Payload(marker), "scheduler": {}}, tmp_path / "r" / "checkpoint" / "optimizer.pt")
    with pytest.raises(FedragError, match="corrupt checkpoint"):
        train_stage(RALTStage(top_k=2), make_rag(tiny_models, demo_dir), train, cfg, out_dir=tmp_path / "r", resume=True)
    assert not marker.exists(), "torch.load(weights_only=True): the checkpoint's pickle ran no code"


def test_the_multi_task_stage_trains_both_sides_with_the_weighted_sum_of_the_two_losses(tiny_models, demo_dir, train):
    from fedrag.train import MultiTaskStage

    rag = make_rag(tiny_models, demo_dir)
    batch = train[:4]
    stage = MultiTaskStage(top_k=3, generation_weight=0.7, retrieval_weight=2.0)
    rag.retriever.query_encoder.eval()  # no dropout: the three losses see the same network
    rag.generator.model.eval()
    with torch.no_grad():
        joint = float(stage.loss(rag, batch).loss)
        ralt = float(RALTStage(top_k=3).loss(rag, batch).loss)
        contrastive = float(ContrastiveStage(top_k=3, train_passages=False).loss(rag, batch).loss)
    assert joint == pytest.approx(0.7 * ralt + 2.0 * contrastive, rel=1e-5)
    assert ralt > 0 and contrastive > 0
    before = get_state(rag, ("retriever", "generator"))
    train_stage(stage, rag, train, TrainConfig(steps=2, batch_size=4, lr_generator=1e-2, lr_retriever=1e-3))
    after = get_state(rag, ("retriever", "generator"))
    for side in ("retriever.", "generator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(side)), f"{side} moved"
    with pytest.raises(Exception, match="multi-task weights"):
        MultiTaskStage(generation_weight=0.0, retrieval_weight=0.0)
