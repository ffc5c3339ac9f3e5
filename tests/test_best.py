"""TrainConfig.keep_best: a run ends with its best validated weights, step 0 included."""

import json
from dataclasses import replace

import pytest
import torch

from fedrag.data import load_qa
from fedrag.errors import FedragError
from fedrag.strategies import Phase, Strategy
from fedrag.train import LSRStage, RALTStage, TrainConfig, get_state, set_state, train_stage
from test_cli import run
from test_stages import make_rag

CFG = TrainConfig(steps=4, batch_size=2, lr_generator=1e-2, scheduler="constant", warmup_ratio=0.0, eval_every=2, keep_best=True)


def _scripted(values):
    """Validation figures in the order the loop asks for them: before step 1, at step 2,
    at step 4 (eval_every) and at the end."""
    values = iter(values)
    return lambda rag, val: {"f1": next(values)}


def _trained(tiny_models, demo_dir, start, cfg, **kw):
    rag = make_rag(tiny_models, demo_dir)
    set_state(rag, start)
    res = train_stage(RALTStage(top_k=2), rag, load_qa(demo_dir / "train.jsonl"), cfg, **kw)
    return res, get_state(rag, ("generator",))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-6, atol=1e-8) for k in a)


def test_keep_best_ends_with_the_weights_of_the_best_validated_step(tiny_models, demo_dir):
    """Validation peaks at step 2 of 4; with a constant learning rate the first two steps
    of the run are a 2-step run, whose weights the run must end with."""
    start = get_state(make_rag(tiny_models, demo_dir), ("generator",))
    val = load_qa(demo_dir / "test.jsonl")[:2]
    res, kept = _trained(tiny_models, demo_dir, start, CFG, val=val, evaluate_fn=_scripted([0.1, 0.5, 0.3, 0.3]))
    assert res.best == {"step": 2, "metric": "f1", "value": 0.5, "val_questions": 2, "carved": False}
    assert res.history[-1]["best_step"] == 2
    _, two = _trained(tiny_models, demo_dir, start, replace(CFG, steps=2, keep_best=False, eval_every=0))
    _, four = _trained(tiny_models, demo_dir, start, replace(CFG, keep_best=False, eval_every=0))
    assert _same(kept, two) and not _same(kept, four)
    # nothing beats the weights it started from: it ends where it started
    res, kept = _trained(tiny_models, demo_dir, start, CFG, val=val, evaluate_fn=_scripted([0.9, 0.5, 0.3, 0.3]))
    assert res.best["step"] == 0 and _same(kept, start)
    # no validation questions given: a fifth of the training questions is set aside for it
    res, _ = _trained(tiny_models, demo_dir, start, replace(CFG, steps=2))
    train = load_qa(demo_dir / "train.jsonl")
    assert res.best["carved"] and 0 < res.best["val_questions"] < len(train) and res.best["metric"] == "f1"


def test_train_keep_best_carves_a_validation_split_and_reports_the_kept_step(
    monkeypatch, capsys, tiny_models, demo_dir, tmp_path
):
    code, out, err = run(monkeypatch, capsys, "train", "--stage", "ralt", "--steps", "2", "--batch-size", "2",
                         "--keep-best", "--val-limit", "4", "--corpus", demo_dir / "corpus.jsonl", "--train",
                         demo_dir / "train.jsonl", "--retriever", tiny_models["retriever"], "--generator",
                         tiny_models["generator"], "--out", tmp_path / "run")  # fmt: skip
    assert code == 0, err
    (best,) = json.loads((tmp_path / "run" / "cost.json").read_text())["best"]
    assert best["metric"] == "f1" and best["val_questions"] == 4 and not best["carved"]
    # the run's last validation (logged at step 2) scored F1 0, and F1 is never below 0: step 0
    # validated at least as well, and a tie keeps the earlier step, so step 0 is the one kept
    final = json.loads((tmp_path / "run" / "phase0-ralt" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["step"] == 2 and final["val_f1"] == 0.0, final
    assert best["step"] == 0 and final["best_step"] == 0 and best["value"] >= final["val_f1"], (best, final)
    assert "kept step 0 of 2" in err, err
    # and the saved generator is step 0's: a fresh LoRA adapter, whose B matrices are zero (peft's
    # initialisation) until a step trains them
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "generator" / "adapter_model.safetensors"))
    lora_b = [t for n, t in saved.items() if "lora_B" in n]
    assert lora_b and all(not t.any() for t in lora_b), "the saved adapter is not the kept step's"


def test_lsr_keeps_its_best_validated_retriever_by_default_except_on_sites(tiny_models, demo_dir):
    """`LSRStage.defaults` asks for keep_best: wherever the stage trains centrally, given no
    validation questions, it sets a fifth of its training questions aside, validates
    retrieval and ends with the best retriever; a federated site leaves it out, and a
    user's own setting wins."""
    phase = Phase(LSRStage(top_k=2))
    assert phase.config(TrainConfig()).keep_best
    assert not phase.config(TrainConfig(), federated=True).keep_best
    assert not phase.config(TrainConfig().set(keep_best=False)).keep_best
    rag = make_rag(tiny_models, demo_dir)
    start = get_state(rag, ("retriever",))
    logs = []
    (res,) = Strategy("lsr", [phase]).run(
        rag, load_qa(demo_dir / "train.jsonl"), TrainConfig(steps=2, batch_size=2), log=logs.append
    )
    assert res.best["carved"] and res.best["metric"] == "recall@5" and res.best["step"] in (0, 2)
    assert logs and "kept step" in logs[0] and "set aside from the training set" in logs[0]
    assert _same(get_state(rag, ("retriever",)), start) == (res.best["step"] == 0)
    # too few questions to set any aside: one line that says what to do
    with pytest.raises(FedragError, match="leave none to validate on: pass --val, or --keep-last"):
        Strategy("lsr", [phase]).run(rag, load_qa(demo_dir / "train.jsonl")[:1], TrainConfig(steps=1, batch_size=1))


def test_validation_between_steps_sees_every_model_in_eval_mode(tiny_models, demo_dir):
    """A joint stage trains the query encoder and the generator (dropout on); the weights it
    validates between steps are measured as `evaluate` measures them, with dropout off, at
    the start, every `eval_every` steps and at the end; training goes on in train mode."""
    from fedrag.train import RAGSequenceStage

    rag = make_rag(tiny_models, demo_dir)
    seen = []

    def modes(rag, val):
        seen.append((rag.retriever.query_encoder.training, rag.generator.model.training))
        return {"recall@5": 0.5}

    cfg = replace(CFG, lr_retriever=1e-3)
    train_stage(
        RAGSequenceStage(top_k=2),
        rag,
        load_qa(demo_dir / "train.jsonl"),
        cfg,
        val=load_qa(demo_dir / "test.jsonl")[:2],
        evaluate_fn=modes,
    )
    assert seen == [(False, False)] * 4, seen
    assert not rag.retriever.query_encoder.training and not rag.generator.model.training, "the run ends in eval mode"
