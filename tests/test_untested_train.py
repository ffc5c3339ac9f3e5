"""Training behaviours issue #39 listed as untested: float16's loss scale across a resume,
keep-best across a resume, and gradient accumulation. In-process, tiny models."""

from dataclasses import replace

import pytest
import torch

from fedrag.data import load_qa
from fedrag.train import RAGSequenceStage, RALTStage, TrainConfig, get_state, train_stage
from test_stages import Interrupt, StopAfter, make_rag


@pytest.fixture(scope="module")
def train(demo_dir):
    return load_qa(demo_dir / "train.jsonl")


def _scaler_of(out) -> dict:
    """The loss scaler a run's last checkpoint holds (torch's GradScaler state)."""
    return torch.load(out / "checkpoint" / "optimizer.pt", weights_only=True)["scaler"]


def test_a_float16_run_resumes_with_the_loss_scale_it_had(tiny_models, demo_dir, train, tmp_path, monkeypatch):
    """float16 scales the loss (GradScaler): a resumed run must go on with the scale and the
    count of good steps since it last changed that the interrupted run had, not restart at
    2**16 with a count of 0. CPU float16 autocast and GradScaler("cpu") stand in for CUDA
    (fedrag refuses float16 on CPU, so its dtype check is bypassed here)."""
    from fedrag.train import loop

    monkeypatch.setattr(loop, "compute_dtype", lambda name, device: torch.float16)
    cfg = TrainConfig(steps=5, batch_size=2, lr_generator=1e-2, checkpoint_every=1, seed=3, dtype="float16")
    whole = make_rag(tiny_models, demo_dir)
    train_stage(RALTStage(top_k=2), whole, train, cfg, out_dir=tmp_path / "whole")
    expected = _scaler_of(tmp_path / "whole")
    assert expected["_growth_tracker"] > 0, "the run took good steps at its last scale"
    with pytest.raises(Interrupt):
        train_stage(StopAfter(RALTStage(top_k=2), 3), make_rag(tiny_models, demo_dir), train, cfg, out_dir=tmp_path / "cut")
    resumed = make_rag(tiny_models, demo_dir)
    train_stage(RALTStage(top_k=2), resumed, train, cfg, out_dir=tmp_path / "cut", resume=True)
    got = _scaler_of(tmp_path / "cut")
    assert (got["scale"], got["_growth_tracker"]) == (expected["scale"], expected["_growth_tracker"])
    a, b = get_state(whole, ("generator",)), get_state(resumed, ("generator",))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a checkpoint written before the scaler was saved still resumes (at the initial scale)
    states = torch.load(tmp_path / "cut" / "checkpoint" / "optimizer.pt", weights_only=True)
    del states["scaler"]
    torch.save(states, tmp_path / "cut" / "checkpoint" / "optimizer.pt")
    res = train_stage(RALTStage(top_k=2), make_rag(tiny_models, demo_dir), train, cfg, out_dir=tmp_path / "cut", resume=True)
    assert res.steps == 5


def test_keep_best_survives_a_resume_with_the_best_step_of_the_uninterrupted_run(tiny_models, demo_dir, train, tmp_path):
    """Validation scores the weights by their distance to those after 2 steps (a 2-step run
    at a constant rate is the first 2 steps of a longer one), so step 2 is the best. A run
    interrupted after its step-4 checkpoint never computes step 2 again when resumed: it
    must end with the best that the interrupted run saved, as the uninterrupted run does."""
    cfg = TrainConfig(steps=6, batch_size=2, lr_generator=1e-2, scheduler="constant", warmup_ratio=0.0, seed=1)
    target = make_rag(tiny_models, demo_dir)
    train_stage(RALTStage(top_k=2), target, train, replace(cfg, steps=2))
    target = get_state(target, ("generator",))

    def closeness(rag, val):
        now = get_state(rag, ("generator",))
        return {"f1": -sum(float((now[k] - target[k]).norm()) for k in target)}

    val = train[-2:]
    cfg = replace(cfg, keep_best=True, eval_every=2, checkpoint_every=2)
    whole = make_rag(tiny_models, demo_dir)
    res = train_stage(RALTStage(top_k=2), whole, train, cfg, val=val, evaluate_fn=closeness, out_dir=tmp_path / "whole")
    assert res.best["step"] == 2
    with pytest.raises(Interrupt):
        train_stage(
            StopAfter(RALTStage(top_k=2), 5), make_rag(tiny_models, demo_dir), train, cfg, val=val, evaluate_fn=closeness,
            out_dir=tmp_path / "cut",
        )  # fmt: skip
    resumed = make_rag(tiny_models, demo_dir)
    counted = StopAfter(RALTStage(top_k=2), 100)
    res = train_stage(counted, resumed, train, cfg, val=val, evaluate_fn=closeness, out_dir=tmp_path / "cut", resume=True)
    assert counted.n == 98, "resumed from the step-4 checkpoint"
    assert res.best["step"] == 2 and res.history[-1]["best_step"] == 2
    a, b = get_state(whole, ("generator",)), get_state(resumed, ("generator",))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert all(torch.allclose(b[k], target[k], atol=1e-6) for k in b), "the step-2 weights"


def test_two_accumulated_batches_of_2_take_the_step_of_one_batch_of_4(tiny_models, demo_dir, train):
    """RAG-Sequence's loss is a mean over questions (no interaction between them; the frozen
    retriever runs without dropout): grad_accum=2 at batch 2 over 4 questions must take the
    step batch 4 takes, and both AdamW's first step on the 4 questions' mean loss, written
    here: w - lr * g / (|g| + eps) (bias-corrected moments of one gradient)."""
    four, stage = train[:4], RAGSequenceStage(top_k=2, train_retriever=False)
    lr = 1e-2
    cfg = TrainConfig(steps=1, batch_size=4, lr_generator=lr, scheduler="constant", warmup_ratio=0.0, max_grad_norm=0.0)
    ref = make_rag(tiny_models, demo_dir)
    params = {k: p for k, p in ref.generator.trainable_parameters().items()}
    ref.generator.model.train()
    loss = stage.loss(ref, four).loss
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    runs = {}
    for batch, accum in ((4, 1), (2, 2)):
        rag = make_rag(tiny_models, demo_dir)
        res = train_stage(stage, rag, four, replace(cfg, batch_size=batch, grad_accum=accum))
        assert res.history[0]["loss"] == pytest.approx(loss.item(), rel=1e-4), "the mean of the 4 questions' losses"
        runs[accum] = get_state(rag, ("generator",))
    compared = moving = 0  # LoRA's A matrices have no gradient while B is zero: they stay as they are
    for name, g in grads.items():
        sure = g.abs() > 1e-6  # below, float noise between batchings may flip the sign AdamW's first step follows
        expected = params[name].detach() - lr * g / (g.abs() + 1e-8)
        for accum in (1, 2):
            got = runs[accum][f"generator.{name}"]
            assert torch.allclose(got[sure], expected[sure], atol=1e-6), (accum, name)
        compared, moving = compared + int(sure.sum()), moving + int((g != 0).sum())
    assert compared > 0.9 * moving > 0
