"""Values, not just shapes (issue #39): each test here checks a number or a choice against a
reference computed by hand or independently of fedrag's own helpers, so a silent value
error (the worst point kept, another fusion constant, a dropped backward factor, a dtype
ignored, a pairing broken) fails a test."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from statistics import NormalDist, stdev

import numpy as np
import pytest
import torch

from fedrag.data import load_qa
from fedrag.data.types import Passage
from fedrag.pipeline import build_training_rag
from fedrag.strategies import Phase, Strategy
from fedrag.strategies.lr_search import search_lr
from fedrag.train import RAGSequenceStage, TrainConfig, get_state, set_state, train_stage

from test_cli import run

SIDES = ("retriever", "generator")


# ---------------------------------------------------------------- 1. the LR search keeps the best point


@pytest.fixture(scope="module")
def search_setup(tiny_models, demo_dir):
    """A training RAG, its initial state, and the untrained retriever's Recall@5 on the
    validation questions computed with plain sentence-transformers + numpy (exact search)."""
    from sentence_transformers import SentenceTransformer

    from fedrag.data import load_corpus

    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    # all 30 test questions: Recall@5 then moves in steps of 1/30 or finer
    train, val = load_qa(demo_dir / "train.jsonl")[:8], load_qa(demo_dir / "test.jsonl")
    passages = load_corpus(demo_dir / "corpus.jsonl")
    plain = SentenceTransformer(tiny_models["retriever"], device="cpu")
    emb = plain.encode([p.as_text() for p in passages], normalize_embeddings=True)
    q = plain.encode([e.question for e in val], normalize_embeddings=True)
    top5 = np.argsort(-(q @ emb.T), axis=1)[:, :5]
    recall0 = np.mean(
        [sum(g in {passages[i].id for i in row} for g in e.gold_ids) / len(e.gold_ids) for row, e in zip(top5, val)]
    )
    return rag, get_state(rag, SIDES), train, val, float(recall0)


def _retriever_only():
    # trains the query encoder alone; its validation is retrieval (Recall@5), no generation
    return Strategy("retriever-only", [Phase(RAGSequenceStage(top_k=2, train_generator=False))])


# one optimizer step at a constant rate (no warmup: a warmed-up first step would have rate 0 at every point)
SEARCH_CFG = TrainConfig(steps=1, batch_size=4, scheduler="constant", warmup_ratio=0.0)


def _check_kept_best(report, rag, start, recall0, axis_points):
    """`axis_points`: the points the rate was chosen among. Rate 0 leaves the retriever as it
    was (Recall@5 = `recall0`, computed independently: 0.77-0.93 for tiny retrievers of three
    builds); one step at 0.1, 1.0 or 3.0 scrambles it (Recall@5 0.0-0.3 in those builds). The
    search must choose rate 0, which sits in the middle of each axis, so neither 'keep the
    first' nor 'keep the last' passes, and keeping the worst fails too."""
    by_lr = {p["lr_retriever"]: p for p in axis_points}
    assert by_lr[0.0]["recall@5"] == pytest.approx(recall0) and recall0 > 0
    assert all(p["recall@5"] < recall0 for lr, p in by_lr.items() if lr != 0.0), "precondition: the other rates do worse"
    assert report["best"]["lr_retriever"] == 0.0, [(p["lr_retriever"], p["recall@5"]) for p in axis_points]
    assert "lr_retriever" in by_lr[0.0]["chosen"]
    assert not any("lr_retriever" in p.get("chosen", ()) for lr, p in by_lr.items() if lr != 0.0)
    # the models left in `rag` are the chosen point's: at rate 0, the initial weights
    now = get_state(rag, SIDES)
    assert all(torch.equal(now[k], start[k]) for k in start), "the best point's weights are not the ones kept"


@pytest.mark.parametrize("mode", ["phase-wise", "grid"])
def test_lr_search_keeps_the_best_point_not_the_first_or_last(search_setup, mode):
    rag, start, train, val, recall0 = search_setup
    set_state(rag, start)
    rag.sync_store()
    report = search_lr(_retriever_only(), rag, train, val, SEARCH_CFG, [1e-4], [1.0, 0.0, 0.1], mode=mode, top_k=2)
    assert report["mode"] == mode and len(report["points"]) == 3
    _check_kept_best(report, rag, start, recall0, report["points"])


# ---------------------------------------------------------------- 2. hybrid retrieval = RRF by hand

# Made-up words only (no English stopwords, all >= 2 letters): bm25s' tokens are the words.
HYBRID_TEXTS = [
    "zephyr quartz marble",
    "cobalt cobalt willow falcon harbor meadow copper",
    "zephyr zephyr cobalt lantern",
    "meadow harbor falcon willow quartz zephyr cobalt marble copper lantern",
    "copper lantern",
    "zephyr willow",
    "harbor cobalt meadow falcon",
]
HYBRID_QUERY = "zephyr cobalt"


def _bm25_reference(query: str, docs: list[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 with Lucene's idf, written out (only the order it gives is used)."""
    toks = [d.split() for d in docs]
    avg = sum(map(len, toks)) / len(toks)
    out = []
    for t in toks:
        s = 0.0
        for w in query.split():
            df = sum(w in u for u in toks)
            tf = t.count(w)
            s += math.log(1 + (len(toks) - df + 0.5) / (df + 0.5)) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(t) / avg))
        out.append(s)
    return out


def _rrf_by_hand(rankings: list[list[int]], k: int, c: int = 60) -> list[tuple[int, Fraction]]:
    fused: dict[int, Fraction] = {}
    for ranking in rankings:
        for r, pos in enumerate(ranking, 1):
            fused[pos] = fused.get(pos, Fraction(0)) + Fraction(1, c + r)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def test_hybrid_is_reciprocal_rank_fusion_of_the_dense_and_bm25_rankings(tiny_models):
    from sentence_transformers import SentenceTransformer

    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    passages = [Passage(f"h{i}", t) for i, t in enumerate(HYBRID_TEXTS)]
    retriever = Retriever.load(tiny_models["retriever"])
    store = KnowledgeStore.build(passages, retriever, use_cache=False)
    # the two rankings, computed apart from fedrag
    plain = SentenceTransformer(tiny_models["retriever"], device="cpu")
    cos = plain.encode(HYBRID_TEXTS, normalize_embeddings=True) @ plain.encode([HYBRID_QUERY], normalize_embeddings=True)[0]
    dense = [int(i) for i in np.argsort(-cos, kind="stable")]
    bm25 = _bm25_reference(HYBRID_QUERY, HYBRID_TEXTS)
    sparse = [int(i) for i in np.argsort(-np.asarray(bm25), kind="stable")]
    assert len(set(bm25)) == len(bm25) and len(set(cos.tolist())) == len(cos), "precondition: no ties in either ranking"
    # fedrag's own dense and BM25 searchers rank as the references do
    assert Searcher(store, retriever, "dense").positions([HYBRID_QUERY], 7)[1][0].tolist() == dense
    assert Searcher(store, None, "bm25").positions([HYBRID_QUERY], 7)[1][0].tolist() == sparse

    hybrid = Searcher(store, retriever, "hybrid")
    # k = 3: default depth 4k = 12 covers the whole store, so every passage gets both terms
    hits = hybrid.search([HYBRID_QUERY], 3)[0]
    want = _rrf_by_hand([dense, sparse], 3)
    assert [h.passage.id for h in hits] == [f"h{p}" for p, _ in want]
    assert [h.score for h in hits] == pytest.approx([float(s) for _, s in want], rel=1e-6)
    scores, pos = hybrid.positions([HYBRID_QUERY], 7)
    want = _rrf_by_hand([dense, sparse], 7)
    assert pos[0].tolist() == [p for p, _ in want]
    assert scores[0].tolist() == pytest.approx([float(s) for _, s in want], rel=1e-6)
    first = 1 / (60 + 1 + dense.index(pos[0][0])) + 1 / (60 + 1 + sparse.index(pos[0][0]))
    assert scores[0][0] == pytest.approx(first, rel=1e-6), "the sum of 1/(60 + rank) over both rankings"
    # depth 3: only each ranking's top 3 take part; a passage in one list gets that term alone
    scores, pos = hybrid.positions([HYBRID_QUERY], 7, depth=3)
    want = _rrf_by_hand([dense[:3], sparse[:3]], 7)
    n = len(want)
    assert n < 7 and pos[0].tolist() == [p for p, _ in want] + [-1] * (7 - n)
    assert scores[0][:n].tolist() == pytest.approx([float(s) for _, s in want], rel=1e-6) and not scores[0][n:].any()


# ---------------------------------------------------------------- 3. bfloat16 is what runs


def _record_linear_dtypes(modules: dict[str, torch.nn.Module]):
    """A global forward hook: the output dtypes of the nn.Linear layers of each named module."""
    owner = {id(m): name for name, root in modules.items() for m in root.modules() if isinstance(m, torch.nn.Linear)}
    seen: dict[str, set] = {name: set() for name in modules}

    def hook(mod, inp, out):
        if id(mod) in owner:
            seen[owner[id(mod)]].add(out.dtype)

    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


def test_training_at_bfloat16_runs_the_forward_in_bfloat16(tiny_models, demo_dir):
    from fedrag.train.loop import compute_dtype

    cpu = torch.device("cpu")
    assert compute_dtype("bfloat16", cpu) is torch.bfloat16 and compute_dtype("float32", cpu) is torch.float32
    assert compute_dtype("auto", cpu) is torch.float32
    train = load_qa(demo_dir / "train.jsonl")[:4]
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    for dtype, want in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        seen, handle = _record_linear_dtypes({"retriever": rag.retriever.query_encoder, "generator": rag.generator.model})
        try:
            train_stage(RAGSequenceStage(top_k=2), rag, train, TrainConfig(steps=1, batch_size=2, dtype=dtype))
        finally:
            handle.remove()
        assert seen == {"retriever": {want}, "generator": {want}}, (dtype, seen)


def test_eval_dtype_bfloat16_loads_and_runs_both_models_in_bfloat16(monkeypatch, capsys, tiny_models, demo_dir, tmp_path):
    """`fedrag eval --dtype`: the query encoder's and the generator's weights, and their
    forward passes while the questions are answered, are at that dtype. The RAG system the
    command builds is watched through a wrapper around the real `build_rag` (nothing replaced)."""
    import fedrag.pipeline

    real = fedrag.pipeline.build_rag
    built = []

    def watched(*a, **kw):
        rag = real(*a, **kw)
        seen, handle = _record_linear_dtypes({"retriever": rag.retriever.query_encoder, "generator": rag.generator.model})
        built.append((rag, seen, handle))
        return rag

    monkeypatch.setattr(fedrag.pipeline, "build_rag", watched)
    args = ["eval", "--test", demo_dir / "test.jsonl", "--corpus", demo_dir / "corpus.jsonl", "--test-limit", "2"]
    args += ["--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"], "--max-new-tokens", "2"]
    for dtype, want in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        try:
            code, out, err = run(monkeypatch, capsys, *args, "--dtype", dtype, "--metrics", tmp_path / f"{dtype}.json")
        finally:
            for _, _, handle in built:
                handle.remove()
        assert code == 0, err
        (rag, seen, _) = built.pop()
        weights = {p.dtype for m in (rag.retriever.query_encoder, rag.generator.model) for p in m.parameters()}
        assert weights == {want} and seen == {"retriever": {want}, "generator": {want}}, (dtype, weights, seen)


# ---------------------------------------------------------------- 4. training FLOPs: 2·N·T forward, 3x with backward


def test_training_flops_follow_the_documented_rule_exactly(tiny_models, demo_dir):
    """`Cost`: 2·N·T for a forward over T tokens of an N-parameter model, plus 4·N·T when a
    backward runs through it. N is counted here on freshly loaded models."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM

    n_r = sum(p.numel() for p in SentenceTransformer(tiny_models["retriever"], device="cpu").parameters())
    n_g = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_models["generator"]).parameters())
    train = load_qa(demo_dir / "train.jsonl")[:4]
    for kw, grad_r, grad_g in (({"train_retriever": False}, 0, 1), ({"train_generator": False}, 1, 0), ({}, 1, 1)):
        rag = build_training_rag(
            str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], lora=False, top_k=2
        )
        res = train_stage(RAGSequenceStage(top_k=2, **kw), rag, train, TrainConfig(steps=1, batch_size=2))
        c = res.cost
        assert c.retriever_tokens > 0 and c.generator_tokens > 0
        want = (2 + 4 * grad_r) * n_r * c.retriever_tokens + (2 + 4 * grad_g) * n_g * c.generator_tokens
        assert c.flops == want, (kw, c.flops, want)
        assert (c.forward_passes, c.backward_passes) == (2, grad_r + grad_g)


# ---------------------------------------------------------------- 6. compare pairs question by question


def _write_rows(out, per_strategy: dict[str, list[float]]):
    (out / "strategies").mkdir(parents=True)
    for name, f1 in per_strategy.items():
        rows = [{"id": f"q{i}", "em": float(v == 1.0), "f1": v} for i, v in enumerate(f1)]
        (out / "strategies" / f"{name}.rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# Per-question F1 of four questions. best (mean 0.5) and other (mean 0.4375) differ on each
# question in both directions; sorting either side, or pairing a strategy with itself, changes
# every count below.
UNTUNED = [0.0, 0.5, 0.5, 0.0]
BEST = [1.0, 0.0, 0.5, 0.5]
OTHER = [0.0, 1.0, 0.5, 0.25]


def test_compare_pairs_each_strategy_question_by_question(tmp_path):
    from fedrag.strategies.compare_store import paired

    _write_rows(tmp_path, {"untuned": UNTUNED, "best": BEST, "other": OTHER})
    rows = [{"strategy": "untuned", "f1": 0.25}, {"strategy": "best", "f1": 0.5}, {"strategy": "other", "f1": 0.4375}]
    got = paired(tmp_path, rows)
    # by hand: other vs best: q0 lost, q1 gained, q2 tie, q3 lost -> (1 gained, 2 lost),
    # sign test p = min(1, 2 * P(Bin(3, 1/2) <= 1)) = min(1, 2 * 4/8) = 1
    assert got["other"]["best"] == "best"
    assert got["other"]["vs_best"]["f1"] == [1, 2, 1.0]
    assert got["other"]["vs_best"]["em"] == [1, 1, 1.0]  # EM 1 only at q0 (best) and q1 (other)
    # vs untuned: best gains q0, q3, loses q1 (tie q2); other gains q1's 0.5 -> 1.0 and q3, loses nothing else
    assert got["best"]["vs_untuned"]["f1"] == [2, 1, 1.0]  # p = min(1, 2 * P(Bin(3,1/2) <= 1)) = 1
    assert got["other"]["vs_untuned"]["f1"] == [2, 0, 0.5]  # p = 2 * (1/2)^2
    assert "vs_best" not in got["best"], "the best strategy is not paired with itself"


def test_compare_verdict_statistics_use_the_paired_differences(tmp_path):
    from fedrag.strategies.verdicts import MARGIN, decide

    scores = {
        name: [{"id": f"q{i}", "em": 0.0, "f1": v, "recall@5": 1.0} for i, v in enumerate(f1)]
        for name, f1 in (("untuned", UNTUNED), ("best", BEST), ("other", OTHER))
    }
    got = decide(scores)
    assert got["best"]["verdict"] == "best" and got["other"]["best"] == "best"
    assert got["other"]["f1_diff"] == pytest.approx(0.4375 - 0.5)
    # the paired differences other - best, question by question: [-1, 1, 0, -0.25]
    diffs = [o - b for o, b in zip(OTHER, BEST)]
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert got["other"]["questions_needed"] == math.ceil((z * stdev(diffs) / MARGIN) ** 2)
    # a bootstrap of the mean of those four differences reaches below -0.25 and above 0 at 2.5%:
    # P(mean < -0.25) and P(mean > 0) are each over 20% (at least two -1s; a 1 and no -1).
    # Sorted-then-paired differences would be [0, -0.25, 0, 0], inside [-0.25, 0].
    low, high = got["other"]["f1_diff_ci"]
    assert low < -0.25 and high > 0 and got["other"]["verdict"] == "inconclusive", (low, high)
