"""Fusion, re-ranking and cost counters against hand-worked values (issue #39, mutation
score): reciprocal rank fusion on made-up rankings, the stale-index re-rank against an
exact search with sentence-transformers' own embeddings, and the FLOPs/throughput rule
of `Cost` worked out by hand."""

from __future__ import annotations

import resource
from fractions import Fraction

import numpy as np
import pytest
import torch

from fedrag.data.types import Passage
from fedrag.retrieve.sparse import reciprocal_rank_fusion
from fedrag.train.cost import Cost, CostMeter, param_count
from fedrag.train.protocol import StepOutput


def test_rrf_by_hand_with_missing_positions_ties_and_padding():
    dense = np.array([[4, 2, 7], [1, -1, -1]])
    sparse = np.array([[2, 9, -1], [3, 1, 0]])
    scores, pos = reciprocal_rank_fusion([dense, sparse], 5, c=10.0)
    # query 0: 2 -> 1/12 + 1/11; 4 -> 1/11; 9 -> 1/12; 7 -> 1/13 (9 before 7; -1 skipped)
    want = [(2, Fraction(1, 12) + Fraction(1, 11)), (4, Fraction(1, 11)), (9, Fraction(1, 12)), (7, Fraction(1, 13))]
    assert pos[0].tolist() == [p for p, _ in want] + [-1]
    assert scores[0].tolist() == pytest.approx([float(s) for _, s in want] + [0.0], rel=1e-6)
    # query 1: 1 -> 1/11 + 1/12; 3 -> 1/11; 0 -> 1/13
    assert pos[1].tolist() == [1, 3, 0, -1, -1]
    assert scores[1][:3].tolist() == pytest.approx([1 / 11 + 1 / 12, 1 / 11, 1 / 13], rel=1e-6)
    # equal fused scores: the lower position first; default c = 60
    assert scores.dtype == np.float32 and pos.dtype == np.int64, "as the dense and BM25 searches give them"
    s, p = reciprocal_rank_fusion([np.array([[5, 3]]), np.array([[3, 5]])], 2)
    assert p[0].tolist() == [3, 5] and s[0].tolist() == pytest.approx([1 / 61 + 1 / 62] * 2, rel=1e-6)


def test_refresh_policy_and_searcher_settings_are_checked():
    from fedrag.retrieve.search import RERANK_DEPTH, resolve_refresh

    assert [resolve_refresh("auto", f) for f in (True, False)] == ["rerank", "phase"]
    assert resolve_refresh("phase", True) == "phase" and resolve_refresh("rerank", False) == "rerank"
    assert RERANK_DEPTH == 4


def test_searcher_rejects_bad_settings(tiny_models):
    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    retriever = Retriever.load(tiny_models["retriever"])
    store = KnowledgeStore.build([Passage("p0", "zephyr quartz"), Passage("p1", "cobalt")], retriever, use_cache=False)
    with pytest.raises(ValueError, match=r"retrieval mode must be one of dense, bm25, hybrid, got 'sparse'"):
        Searcher(store, retriever, "sparse")
    with pytest.raises(ValueError, match="retrieval mode 'hybrid' needs a dense retriever"):
        Searcher(store, None, "hybrid")
    with pytest.raises(ValueError, match="index refresh must be phase or rerank, got 'auto'"):
        Searcher(store, retriever, refresh="auto")
    s = Searcher(store, None, "bm25")
    assert s.stale is False and s.refresh == "phase" and s.positions(["cobalt"], 5)[1].shape == (1, 2)
    assert s.timing == {"encode_s": 0.0, "search_s": 0.0, "queries": 0}
    assert Searcher(store, retriever, "dense")._bm25 is None, "a dense searcher builds no BM25 index"


BM25_DOCS = ["the the the zephyr cobalt", "zephyr quartz", "cobalt willow willow the", "quartz quartz willow"]


def test_bm25_scores_are_okapi_bm25_over_the_texts_without_english_stopwords():
    """Lucene's BM25 (k1 = 1.5, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5)), no (k1 + 1) factor) over the
    texts with 'the' removed, in both the index and the query, worked out here."""
    import math

    from fedrag.retrieve.sparse import BM25Index

    docs = [[w for w in d.split() if w != "the"] for d in BM25_DOCS]
    avg = sum(map(len, docs)) / len(docs)

    def bm25(query, doc):
        out = 0.0
        for w in query:
            df, tf = sum(w in d for d in docs), doc.count(w)
            out += math.log(1 + (len(docs) - df + 0.5) / (df + 0.5)) * tf / (tf + 1.5 * (0.25 + 0.75 * len(doc) / avg))
        return out

    ref = [bm25(["zephyr", "cobalt"], d) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: -ref[i])[:2]
    scores, pos = BM25Index([Passage(f"d{i}", t) for i, t in enumerate(BM25_DOCS)]).search(["the zephyr and the cobalt"], 2)
    assert pos.tolist() == [order] and pos.dtype == np.int64 and scores.dtype == np.float32
    assert scores[0].tolist() == pytest.approx([ref[i] for i in order], rel=1e-5)


TEXTS = [f"{w} passage number {i} about {v}" for i, (w, v) in enumerate(zip("ab" * 6, ["tea", "coal", "iron", "salt"] * 3))]


def test_a_stale_index_reranks_its_candidates_by_fresh_embeddings(tiny_models):
    """`RERANK_DEPTH * k` candidates from the stale store, re-scored by the passages embedded
    now: with a store built by the same encoder the result is the exact search computed
    here with sentence-transformers; with a store whose vectors are scrambled, the
    candidates still come from the store but their scores are the fresh cosines."""
    from sentence_transformers import SentenceTransformer

    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    passages = [Passage(f"p{i}", t) for i, t in enumerate(TEXTS)]
    retriever = Retriever.load(tiny_models["retriever"])
    store = KnowledgeStore.build(passages, retriever, use_cache=False)
    plain = SentenceTransformer(tiny_models["retriever"], device="cpu")
    emb = plain.encode([p.as_text() for p in passages], normalize_embeddings=True)
    q = plain.encode(["iron passage", "tea"], normalize_embeddings=True)
    exact = np.argsort(-(q @ emb.T), axis=1, kind="stable")
    import time

    s = Searcher(store, retriever, "dense", refresh="rerank")
    s.stale = True
    t0 = time.perf_counter()
    scores, pos = s.positions(["iron passage", "tea"], 2)
    elapsed = time.perf_counter() - t0
    first = dict(s.timing)
    assert 0 < first["encode_s"] and 0 < first["search_s"] and first["encode_s"] + first["search_s"] <= elapsed
    assert pos.tolist() == exact[:, :2].tolist() and pos.shape == (2, 2)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ emb.T, exact[:, :2], axis=1), rtol=1e-4, atol=1e-5)
    assert s.timing["queries"] == 2 and s.timing["encode_s"] > 0 and s.timing["search_s"] > 0
    s.positions(["salt"], 1)
    assert s.timing["queries"] == 3, "accumulated over calls"
    assert s.timing["encode_s"] > first["encode_s"] and s.timing["search_s"] > first["search_s"]
    hits = s.search(["tea"], 3)
    assert len(hits) == 1 and [h.passage.id for h in hits[0]] == [f"p{i}" for i in exact[1, :3]]
    assert hits[0][0].score == pytest.approx(float(q[1] @ emb[exact[1, 0]]), rel=1e-4)


def test_a_store_another_encoder_built_is_reranked_by_the_current_one(tiny_models):
    """A stale store (built by another encoder, here the tiny one with noise added): at k = 3
    its `RERANK_DEPTH * k` = 12 candidates are every passage, so the re-ranked answer is the
    exact search with the current encoder (computed here with sentence-transformers), where
    the store's own search answers otherwise."""
    from sentence_transformers import SentenceTransformer

    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    passages = [Passage(f"p{i}", t) for i, t in enumerate(TEXTS)]
    retriever, other = Retriever.load(tiny_models["retriever"]), Retriever.load(tiny_models["retriever"])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    store = KnowledgeStore.build(passages, other, use_cache=False)
    plain = SentenceTransformer(tiny_models["retriever"], device="cpu")
    emb = plain.encode([p.as_text() for p in passages], normalize_embeddings=True)
    questions = ["iron passage", "tea", "salt number 3"]
    q = plain.encode(questions, normalize_embeddings=True)
    exact = np.argsort(-(q @ emb.T), axis=1, kind="stable")[:, :3]
    s = Searcher(store, retriever, "dense", refresh="rerank")
    s.stale = True
    scores, pos = s.positions(questions, 3)
    assert pos.tolist() == exact.tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(q @ emb.T, exact, axis=1), rtol=1e-4, atol=1e-5)
    s.stale = False  # precondition: the store's own search answers otherwise
    assert s.positions(questions, 3)[1].tolist() != exact.tolist()


def test_hybrid_hits_skip_the_padding_of_a_shallow_fusion(tiny_models):
    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    passages = [Passage(f"p{i}", t) for i, t in enumerate(TEXTS)]
    retriever = Retriever.load(tiny_models["retriever"])
    s = Searcher(KnowledgeStore.build(passages, retriever, use_cache=False), retriever, "hybrid")
    dense = s.positions(["coal number"], 2, depth=1)
    assert 1 <= (dense[1][0] >= 0).sum() <= 2
    hits = s.search(["coal number"], 12)[0]
    assert len(hits) == 12, "depth 4k = 48 covers every passage"


def _out(rt, gt, rg, gg):
    return StepOutput(loss=torch.tensor(0.0), retriever_tokens=rt, generator_tokens=gt, retriever_grad=rg, generator_grad=gg)


def test_cost_meter_counts_passes_and_the_2nt_6nt_flops_rule():
    import time

    t0 = time.perf_counter()
    m = CostMeter("s", retriever_params=10, generator_params=1000)
    m.step(_out(7, 0, True, False), 3)  # retriever fwd+bwd: 6 · 10 · 7
    m.step(_out(5, 11, False, True), 2)  # retriever fwd 2 · 10 · 5, generator fwd+bwd 6 · 1000 · 11
    m.step(_out(0, 4, False, False), 1)  # generator forward only: 2 · 1000 · 4
    m.step(_out(1, 1, False, False), 0)  # one token through each: two forwards, 2 · 10 + 2 · 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    c = m.finish(steps=4)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert c.name == "s" and (c.examples, c.retriever_tokens, c.generator_tokens) == (6, 13, 16)
    assert (c.forward_passes, c.backward_passes, c.steps) == (6, 2, 4)
    assert c.flops == 6 * 10 * 7 + 2 * 10 * 5 + 6 * 1000 * 11 + 2 * 1000 * 4 + 2 * 10 + 2 * 1000
    assert 0 < c.wall_s <= elapsed
    assert before <= c.peak_memory_mb <= after, "peak RSS in MiB (ru_maxrss is KiB on Linux)"
    assert c.retriever_tokens_per_s == pytest.approx(13 / c.wall_s)
    assert c.generator_tokens_per_s == pytest.approx(16 / c.wall_s)


def test_cost_sum_adds_counters_keeps_the_peak_and_a_shared_batch():
    a = Cost(name="", wall_s=2.0, steps=1, examples=2, retriever_tokens=10, generator_tokens=30, forward_passes=2)
    a.backward_passes, a.flops, a.peak_memory_mb, a.batch_size = 1, 5.0, 300.0, 4
    b = Cost(name="b", wall_s=3.0, steps=2, examples=4, retriever_tokens=5, generator_tokens=20, forward_passes=3)
    b.backward_passes, b.flops, b.peak_memory_mb, b.batch_size = 2, 7.0, 200.0, 4
    s = a + b
    assert s.name == "b" and (s.wall_s, s.steps, s.examples) == (5.0, 3, 6)
    assert (s.retriever_tokens, s.generator_tokens, s.forward_passes, s.backward_passes, s.flops) == (15, 50, 5, 3, 12.0)
    assert s.peak_memory_mb == 300.0 and s.batch_size == 4
    assert (s.retriever_tokens_per_s, s.generator_tokens_per_s) == (3.0, 10.0)
    assert Cost(name="x").add(b).name == "x" and Cost(name="x").to_dict()["name"] == "x"
    assert (a + Cost(batch_size=0)).batch_size == 4, "an empty sum keeps the stage's batch"
    assert (a + Cost(batch_size=8)).batch_size == 0, "different stages have no one batch"
    assert Cost(retriever_tokens=3).with_throughput().retriever_tokens_per_s == 0.0, "no time: no rate"
    assert sum([a, b], Cost(name="all")).flops == 12.0


def test_param_count():
    assert param_count(torch.nn.Linear(3, 2)) == 8 and param_count(None) == 0
