"""The learning-rate search's choices against hand-worked expectations (issue #39, mutation
score of `fedrag/strategies/lr_search.py`). Real tiny models train one step per point, so a
search costs a second or two: rate 0 leaves a model as it was, one step at 1.0 scrambles it.
Generator phases are judged on questions whose gold answers are the untrained system's own
answers (RAG-Sequence decoding, top 2), so F1 = EM = 1 exactly while the generator (and the
retriever that feeds it) are untouched, and lower after a step at rate 1."""

from __future__ import annotations

import inspect
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedrag.data import load_qa
from fedrag.errors import FedragError
from fedrag.evaluate import evaluate
from fedrag.evaluate.metrics import f1_score
from fedrag.generate.decoding import RETRIEVAL_GAMMA, GenerationSettings
from fedrag.models import import_sentence_transformers
from fedrag.pipeline import build_training_rag
from fedrag.rag import RAGSystem
from fedrag.strategies import Phase, Strategy
from fedrag.strategies.library import make_strategy
from fedrag.strategies.lr_search import _evaluator, search_lr, search_mode
from fedrag.train import ContrastiveStage, RAGSequenceStage, RALTStage, TrainConfig, get_state, set_state, train_stage
from fedrag.train.validate import validation_fn

# imported at collection, as fedrag's processes import it: each mutant run forks from a process that holds it
import_sentence_transformers()

SIDES = ("retriever", "generator")
# one optimizer step at a constant rate; lr_generator / lr_retriever stay TrainConfig's configured values
CFG = TrainConfig(steps=1, batch_size=4, scheduler="constant", warmup_ratio=0.0)
RETRIEVAL_KEYS = {"recall@5", "mrr@10", "answer_recall@5"}
POINT_KEYS = {"phase", "stage", "lr_generator", "lr_retriever", "searched", "stage_runs", "wall_s", "flops", "cost"}
GRID_ONLY = "trains both sides in one phase: its search is the 2-D grid"
REPORT_KEYS = {"strategy", "mode", "best", "chosen", "ties", "points", "stage_runs", "search_cost", "final_cost"}


def _rag(tiny_models, demo_dir, **kw):
    return build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2, **kw)


def _decoded(rag, examples, decoding: str) -> list[dict]:
    view = RAGSystem(rag.searcher, rag.generator, top_k=2, settings=GenerationSettings(decoding, gamma=RETRIEVAL_GAMMA))
    return evaluate(view, examples, progress=False, ks=(1, 5))["_rows"]


@pytest.fixture(scope="module")
def lr(tiny_models, demo_dir):
    rag = _rag(tiny_models, demo_dir)
    test = load_qa(demo_dir / "test.jsonl")
    # four questions whose gold passage the untrained retriever finds (Recall@5 = 1 on them), with
    # the untrained system's own answers as gold (picked, not fixed: a change to the tiny models
    # changes which questions these are)
    picked = []
    for i in range(0, len(test), 8):  # RAG-Sequence decoding is the fixture's cost: only as far as needed
        rows = _decoded(rag, test[i : i + 8], "rag-sequence")
        picked += [(e, r["prediction"]) for e, r in zip(test[i : i + 8], rows) if r["recall@5"] == 1.0]
        if len(picked) >= 4:
            break
    picked = picked[:4]
    val_g = [replace(e, answers=(a,)) for e, a in picked]
    assert len(val_g) == 4 and all(a.strip() for _, a in picked)
    concat, train = [r["prediction"] for r in _decoded(rag, val_g, "concat")], load_qa(demo_dir / "train.jsonl")[:8]
    # val_r: all 30 questions, retrieval metrics in steps of 1/30 or finer (no generation)
    ns = SimpleNamespace(rag=rag, start=get_state(rag, SIDES), train=train, val_g=val_g, val_r=test, concat=concat)
    ns.untrained_r = validation_fn(False, 2)(rag, test)
    return ns


def _fresh(lr):
    set_state(lr.rag, lr.start)
    lr.rag.sync_store()
    return lr.rag


def _unchanged(rag, start) -> bool:
    now = get_state(rag, SIDES)
    return all(torch.equal(now[k], start[k]) for k in start)


def _check_costs(report, points, chosen):
    """search_cost sums every point's, final_cost the chosen points' (the final run)."""
    for name, pts in (("lr-search", points), ("final", chosen)):
        cost = report["search_cost" if name == "lr-search" else "final_cost"]
        assert cost["name"] == name
        assert cost["flops"] == sum(p["flops"] for p in pts) and cost["flops"] > 0
        assert cost["wall_s"] == pytest.approx(sum(p["wall_s"] for p in pts))
    for p in points:
        assert p["flops"] == p["cost"]["flops"] and p["wall_s"] == p["cost"]["wall_s"]
    assert [r.cost.flops for r in report["final_results"]] == [p["flops"] for p in chosen]


# ---------------------------------------------------------------- what is searched, and refusals


def test_search_mode_is_the_grid_only_when_a_phase_trains_both_sides():
    phase_wise, grid = ("independent", "two-phase", "ra-dit"), ("joint-sequence", "joint-token", "multi-task")
    modes = {n: search_mode(make_strategy(n)) for n in phase_wise + grid}
    assert modes == {**dict.fromkeys(phase_wise, "phase-wise"), **dict.fromkeys(grid, "grid")}


def test_refusals_come_before_any_training(lr):
    one = Strategy("ret", [Phase(RAGSequenceStage(top_k=2, train_generator=False))])
    joint = make_strategy("joint-sequence", top_k=2)
    cases = [
        ((one, [], [1e-4], [1e-4]), {}, "^the learning-rate search needs validation examples$"),
        ((one, lr.val_r, [], [1e-4]), {}, "^give at least one learning rate per model$"),
        ((one, lr.val_r, [1e-4], []), {}, "^give at least one learning rate per model$"),
        ((one, lr.val_r, [1e-4], [1e-4]), {"mode": "random"}, "^unknown search mode 'random'$"),
        ((joint, lr.val_r, [1e-4], [1e-4]), {"mode": "phase-wise"}, f"^strategy 'joint-sequence' {GRID_ONLY}$"),
    ]
    for (strategy, val, lrs_g, lrs_r), kw, message in cases:
        with pytest.raises(FedragError, match=message):
            search_lr(strategy, None, lr.train, val, CFG, lrs_g, lrs_r, **kw)


def test_validation_decodes_as_the_phase_trains_and_ranks_f1_then_em_then_retrieval():
    def settings(fn):
        return inspect.getclosurevars(fn).nonlocals

    ralt, seq = RALTStage(top_k=2), RAGSequenceStage(top_k=2, gamma=0.5, train_retriever=False)
    strategy = Strategy("s", [Phase(ralt), Phase(seq)])  # its own decoding: the last generator phase's, rag-sequence
    fn, rank = _evaluator(strategy, ralt, 3)
    got = settings(fn)
    assert got["with_generator"] is True and got["top_k"] == 3 and got["k"] == 5
    assert (got["settings"].decoding, got["settings"].gamma) == ("concat", RETRIEVAL_GAMMA)
    got = settings(_evaluator(strategy, seq, 2)[0])
    assert (got["settings"].decoding, got["settings"].gamma) == ("rag-sequence", 0.5)

    class Undeclared:  # a generator stage that declares no decoding (no gamma either): the strategy's
        name, trains = "undeclared", ("generator",)

    got = settings(_evaluator(Strategy("u", [Phase(Undeclared())]), Undeclared(), 2)[0])
    assert (got["settings"].decoding, got["settings"].gamma) == ("concat", 1.0)
    got = settings(_evaluator(Strategy("v", [Phase(seq)]), Undeclared(), 2)[0])
    assert (got["settings"].decoding, got["settings"].gamma) == ("rag-sequence", 0.5)

    class NoGamma(Undeclared):  # declares its decoding without a gamma: the retrieval temperature's default
        decoding = {"decoding": "rag-token"}

    got = settings(_evaluator(strategy, NoGamma(), 2)[0])
    assert (got["settings"].decoding, got["settings"].gamma) == ("rag-token", RETRIEVAL_GAMMA)
    # ranks: F1 first, EM breaks its ties, then the retrieval figure (Recall@5, else answer-recall@5)
    m = [
        {"f1": 0.5, "em": 0.0, "recall@5": 0.1},
        {"f1": 0.4, "em": 1.0, "recall@5": 0.9},
        {"f1": 0.5, "em": 0.5, "recall@5": 0.0},
        {"f1": 0.5, "em": 0.5, "answer_recall@5": 0.2},
    ]
    assert [rank(x) for x in m] == [(0.5, 0.0, 0.1), (0.4, 1.0, 0.9), (0.5, 0.5, 0.0), (0.5, 0.5, 0.2)]
    assert max(range(4), key=lambda i: rank(m[i])) == 3
    assert rank({"answer_recall@5": 0.5}) == (0.0, 0.0, 0.5), "no answers scored: F1 and EM count as 0"
    fn, rank = _evaluator(strategy, ContrastiveStage(top_k=2), 4)
    got = settings(fn)
    assert got["with_generator"] is False and got["top_k"] == 4 and got["settings"] is None
    assert rank({"f1": 1.0, "recall@5": 0.25}) == (0.25,) and rank({"answer_recall@5": 0.5}) == (0.5,)


# ---------------------------------------------------------------- one retriever phase: the first of the tied best


def _retriever_only():
    return Strategy("retriever-only", [Phase(RAGSequenceStage(top_k=2, train_generator=False))])


@pytest.mark.parametrize("mode", ["phase-wise", "grid"])
def test_retriever_search_keeps_the_first_of_the_tied_best_points(lr, mode):
    rag, seen = _fresh(lr), []
    kw = {"mode": mode} if mode == "grid" else {}  # phase-wise is what "auto" chooses here
    report = search_lr(
        _retriever_only(), rag, lr.train, lr.val_r, CFG, [3e-4], [1.0, 0.0, 0.0], top_k=2, on_point=seen.append, **kw
    )
    points = report["points"]
    assert set(report) == REPORT_KEYS | {"final_results"} and seen == points and report["mode"] == mode
    assert report["strategy"] == "retriever-only" and report["stage_runs"] == 3
    grid = mode == "grid"
    for p, rate in zip(points, [1.0, 0.0, 0.0]):
        assert set(p) - POINT_KEYS == RETRIEVAL_KEYS | ({"chosen", "ties"} if p is points[1] else set())
        assert (p["lr_retriever"], p["lr_generator"]) == (rate, 3e-4 if grid else CFG.lr_generator)
        assert p["phase"] == ("all" if grid else 0) and p["stage"] == ("retriever-only" if grid else "rag-sequence")
        assert p["searched"] == (["lr_generator", "lr_retriever"] if grid else ["lr_retriever"])
        assert p["stage_runs"] == 1 and p["cost"]["name"] == p["stage"]
    # rate 0 leaves the retriever as it was (its validation is the untrained one's); a step at 1.0 scrambles it
    assert {k: points[1][k] for k in RETRIEVAL_KEYS} == lr.untrained_r == {k: points[2][k] for k in RETRIEVAL_KEYS}
    assert points[0]["recall@5"] < lr.untrained_r["recall@5"]
    # two points tie for the best: the first of them is kept, and the tie is reported
    assert points[1]["chosen"] == (["lr_generator", "lr_retriever"] if grid else ["lr_retriever"]) and points[1]["ties"] == 2
    assert report["chosen"] == points[1]["chosen"]
    assert report["best"] == {"lr_generator": 3e-4 if grid else CFG.lr_generator, "lr_retriever": 0.0}
    assert report["ties"] == dict.fromkeys(points[1]["chosen"], 2)
    _check_costs(report, points, [points[1]])
    assert _unchanged(rag, lr.start) and not rag.retriever.shared
    # a phase that does not keep its best step is not validated while it trains (the search validates it once)
    assert not any(k.startswith("val_") for r in report["final_results"] for rec in r.history for k in rec)


# ---------------------------------------------------------------- the 2-D grid of joint training


def test_joint_grid_keeps_the_best_point_by_f1_decoded_as_rag_sequence(lr):
    rag = _fresh(lr)
    report = search_lr(make_strategy("joint-sequence", top_k=2), rag, lr.train, lr.val_g, CFG, [0.0, 1.0], [1.0, 0.0], top_k=2)
    points = report["points"]
    assert report["mode"] == "grid" and report["strategy"] == "joint-sequence"
    assert [(p["lr_generator"], p["lr_retriever"]) for p in points] == [(0.0, 1.0), (0.0, 0.0), (1.0, 1.0), (1.0, 0.0)]
    # (0, 0) answers as the untrained system: F1 = EM = Recall@5 = 1; every other point ranks below it
    best = points[1]
    assert (best["f1"], best["em"], best["recall@5"]) == (1.0, 1.0, 1.0)
    assert all((p["f1"], p["em"], p["recall@5"]) < (1.0, 1.0, 1.0) for p in points if p is not best)
    assert set(best) - POINT_KEYS == {"em", "f1", "recall@5", "mrr@10", "answer_recall@5", "chosen", "ties"}
    assert best["chosen"] == ["lr_generator", "lr_retriever"] and best["ties"] == 1 and report["ties"] == {}
    assert all("chosen" not in p for p in points if p is not best)
    assert report["best"] == {"lr_generator": 0.0, "lr_retriever": 0.0} and report["stage_runs"] == 4
    assert all(p["phase"] == "all" and p["stage"] == "joint-sequence" for p in points)
    _check_costs(report, points, [best])
    assert _unchanged(rag, lr.start)


def test_a_grid_ending_in_a_retriever_phase_chooses_the_generator_rate_by_its_answers(lr):
    """Joint RAG-Sequence, then contrastive: the grid chooses both rates, so it is judged on
    answers (decoded as the joint phase), not by Recall@5, which the generator's rate leaves as it is."""
    rag = _fresh(lr)
    joint, ret = RAGSequenceStage(top_k=2), ContrastiveStage(top_k=2)
    report = search_lr(
        Strategy("joint-then-ret", [Phase(joint), Phase(ret)]), rag, lr.train, lr.val_g, CFG, [1.0, 0.0], [0.0], top_k=2
    )
    points = report["points"]
    assert report["mode"] == "grid" and [p["lr_generator"] for p in points] == [1.0, 0.0]
    # retriever rate 0: both points retrieve as the untrained system (a tie by Recall@5); rate 0 on the
    # generator answers as it did (F1 = EM = 1), one step at 1.0 does not
    assert points[0]["recall@5"] == points[1]["recall@5"] == 1.0
    assert (points[1]["f1"], points[1]["em"]) == (1.0, 1.0) and points[0]["f1"] < 1.0
    assert report["best"] == {"lr_generator": 0.0, "lr_retriever": 0.0} and points[1]["chosen"]
    assert _unchanged(rag, lr.start)


# ---------------------------------------------------------------- phase-wise: phase 2 starts from phase 1's best


def test_phase_wise_searches_phase_two_from_phase_one_kept_models(lr):
    rag = _fresh(lr)
    untrained = validation_fn(False, 2)(rag, lr.val_g)  # Recall@5 = 1 on these questions
    ret, gen = RAGSequenceStage(top_k=2, train_generator=False), RAGSequenceStage(top_k=2, train_retriever=False)
    report = search_lr(Strategy("two", [Phase(ret), Phase(gen)]), rag, lr.train, lr.val_g, CFG, [1.0, 0.0], [0.0, 1.0], top_k=2)
    points = report["points"]
    assert report["mode"] == "phase-wise" and [p["phase"] for p in points] == [0, 0, 1, 1]
    assert [p["searched"] for p in points] == [["lr_retriever"]] * 2 + [["lr_generator"]] * 2
    want = [(CFG.lr_generator, 0.0), (CFG.lr_generator, 1.0), (1.0, CFG.lr_retriever), (0.0, CFG.lr_retriever)]
    assert [(p["lr_generator"], p["lr_retriever"]) for p in points] == want
    # phase 1 (retriever, judged by Recall@5 alone): rate 0 keeps the untrained figures, 1.0 loses a gold passage
    assert {k: points[0][k] for k in RETRIEVAL_KEYS} == untrained and "f1" not in points[0]
    assert untrained["recall@5"] == 1.0 and points[1]["recall@5"] < 1.0
    # phase 2 starts from phase 1's best (not its last, scrambled) retriever: its points retrieve as the
    # untrained one does, and at rate 0 answer exactly as the untrained system (F1 = EM = 1)
    assert all({k: p[k] for k in RETRIEVAL_KEYS} == untrained for p in points[2:])
    assert (points[3]["f1"], points[3]["em"]) == (1.0, 1.0) and points[2]["f1"] < 1.0
    assert [p.get("chosen") for p in points] == [["lr_retriever"], None, None, ["lr_generator"]]
    assert [p.get("ties") for p in points] == [1, None, None, 1] and report["ties"] == {}
    assert report["best"] == {"lr_generator": 0.0, "lr_retriever": 0.0} and report["stage_runs"] == 4
    assert report["chosen"] == ["lr_generator", "lr_retriever"]
    _check_costs(report, points, [points[0], points[3]])
    assert _unchanged(rag, lr.start)


def test_a_phase_that_keeps_its_best_step_validates_on_the_search_questions(lr):
    rag = _fresh(lr)
    assert lr.concat != [e.answers[0] for e in lr.val_g], "precondition: concat decoding answers otherwise"
    strategy = Strategy("gen", [Phase(RAGSequenceStage(top_k=2, train_retriever=False), {"keep_best": True})])
    report = search_lr(strategy, rag, lr.train, lr.val_g, CFG, [1.0], [5e-3], top_k=2)
    # validated before the step (F1 1: the untrained answers) and after it (lower): step 0 is kept, and
    # its validation is the search's (4 questions, decoded as RAG-Sequence), none set aside from training
    assert report["final_results"][0].best == {"step": 0, "metric": "f1", "value": 1.0, "val_questions": 4, "carved": False}
    (point,) = report["points"]
    assert (point["f1"], point["em"], point["lr_generator"], point["lr_retriever"]) == (1.0, 1.0, 1.0, CFG.lr_retriever)
    assert report["best"] == {"lr_generator": 1.0, "lr_retriever": CFG.lr_retriever} and report["chosen"] == ["lr_generator"]
    assert _unchanged(rag, lr.start)


def test_a_passage_training_search_shares_the_retriever_and_keeps_the_store_in_step(tiny_models, demo_dir, lr):
    rag = _rag(tiny_models, demo_dir)
    emb0 = np.array(rag.store.embeddings)
    strategy = Strategy("shared", [Phase(ContrastiveStage(top_k=2))])  # trains the passage encoder too
    # judged on the four questions whose gold passage the untrained retriever ranks in its top 2
    # (Recall@5 = 1, the most there is): rate 0, tried first, cannot be beaten and a later tie
    # keeps it, whatever one step does to a tiny build; the last point trained (0.1) is not the kept one
    report = search_lr(strategy, rag, lr.train, lr.val_g, CFG, [3e-4], [0.0, 1.0, 0.1], top_k=2)
    points = report["points"]
    assert rag.retriever.shared and report["best"]["lr_retriever"] == 0.0 and points[0]["chosen"] == ["lr_retriever"]
    assert points[0]["recall@5"] == 1.0 and "chosen" not in points[1] and "chosen" not in points[2]
    # the store left in `rag` is the kept (untouched) encoder's: the initial embeddings, current
    assert rag.store.fingerprint == rag.retriever.passage_fingerprint() and not rag.searcher.stale
    np.testing.assert_allclose(rag.store.embeddings, emb0, atol=1e-6)
    assert {k: points[0][k] for k in RETRIEVAL_KEYS} == validation_fn(False, 2)(rag, lr.val_g)
    # the point at 0.1 (after one at 1.0) trained from the initial encoder and store, and was
    # validated on the store it re-embedded: as a lone run from the kept models gives
    train_stage(strategy.phases[0].stage, rag, lr.train, CFG.set(lr_retriever=0.1))
    rag.sync_store()
    assert np.abs(np.asarray(rag.store.embeddings) - emb0).max() > 1e-4, "precondition: one step at 0.1 moves the store"
    assert {k: points[2][k] for k in RETRIEVAL_KEYS} == validation_fn(False, 2)(rag, lr.val_g)


class _Undeclared(RAGSequenceStage):
    """A generator phase that declares no decoding: its answers are decoded as its strategy's (concat)."""

    decoding = None


def test_a_generator_phase_reports_the_lora_retriever_rate_it_holds(tiny_models, demo_dir, lr):
    rag = _rag(tiny_models, demo_dir, retriever_lora=True)  # a fresh adapter: the same retrieval as the plain retriever
    strategy = Strategy("plain", [Phase(_Undeclared(top_k=2, train_retriever=False))])
    report = search_lr(strategy, rag, lr.train, lr.val_g[:1], CFG, [0.0], [5e-3], top_k=2)
    (point,) = report["points"]
    # a LoRA retriever's rate is the adapter's (1e-3) where the user set none; the search did not choose it
    assert point["lr_retriever"] == 1e-3 and report["best"]["lr_retriever"] == CFG.lr_retriever
    assert point["f1"] == f1_score(lr.concat[0], lr.val_g[0].answers), "decoded as the strategy: concat"


def test_a_grid_decodes_a_stage_without_its_own_decoding_as_its_strategy(lr):
    rag = _fresh(lr)
    report = search_lr(make_strategy("multi-task", top_k=2), rag, lr.train, lr.val_g, CFG, [0.0], [0.0], top_k=2)
    (point,) = report["points"]
    # rate 0 on both sides: the untrained system, decoded with concat (multi-task declares no decoding)
    want = [f1_score(c, e.answers) for c, e in zip(lr.concat, lr.val_g)]
    assert point["f1"] == pytest.approx(sum(want) / 4) and point["chosen"] == ["lr_generator", "lr_retriever"]
