"""Metric, statistic and verdict values on hand-computed cases (issue #39, mutation score):
the edges (empty gold, a single value, a CI touching the margin or 0), the sign test's
binomial tail by hand, the bootstrap against a numpy reimplementation written here, and
the verdict sentences word for word."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrag.evaluate.metrics import (
    answer_recall_at_k,
    f1_score,
    mrr_at_k,
    ndcg_at_k,
    paired_sign_test,
    precision_at_k,
    recall_at_k,
    sign_test,
)
from fedrag.evaluate.stats import bootstrap_ci, paired_diff_ci, questions_needed, verdict


def test_f1_of_an_answer_that_normalises_to_nothing():
    assert f1_score("the", ["a"]) == 1.0, "both empty after normalisation: equal"
    assert f1_score("the", ["Paris"]) == 0.0
    assert f1_score("Paris", ["an"]) == 0.0


def test_retrieval_metrics_without_gold_are_nan_and_default_to_the_top_10():
    for metric in (recall_at_k, precision_at_k, ndcg_at_k):
        assert math.isnan(metric(["d1"], [], 5))
    ranked = [f"d{i}" for i in range(1, 13)]
    assert mrr_at_k(ranked, ["d11"]) == 0.0, "rank 11 is beyond the default k = 10"
    assert mrr_at_k(ranked, ["d10"]) == pytest.approx(0.1)
    assert ndcg_at_k(ranked, ["d11"]) == 0.0
    assert ndcg_at_k(ranked, ["d10"]) == pytest.approx(1 / math.log2(11))


def test_answer_recall_finds_a_whole_normalised_answer_in_the_first_k_passages():
    passages = ["Tokyo is large.", "The capital is PARIS, France.", "Parisian cafes"]
    assert answer_recall_at_k(passages, ["Paris"], 2) == 1.0
    assert answer_recall_at_k(passages, ["Paris"], 1) == 0.0, "the second passage is beyond k = 1"
    assert answer_recall_at_k(passages[2:], ["Paris"], 5) == 0.0, "a word inside a longer word is no match"
    assert answer_recall_at_k(passages, ["the", "Rome"], 3) == 0.0, "an answer normalised to nothing matches nothing"
    assert answer_recall_at_k(passages, ["Rome", "the capital"], 3) == 1.0, "any alias"


def test_sign_test_is_the_two_sided_binomial_tail():
    # n = 10, min = 2: (C(10,0) + C(10,1) + C(10,2)) = 56; p = 2 * 56 / 1024
    assert sign_test(8, 2) == pytest.approx(112 / 1024)
    assert sign_test(2, 8) == pytest.approx(112 / 1024)
    # n = 9, min = 0: 2 / 512
    assert sign_test(9, 0) == pytest.approx(2 / 512)
    # n = 7, min = 3: 2 * (1 + 7 + 21 + 35) / 128 = 1 -> capped at 1
    assert sign_test(4, 3) == 1.0
    assert sign_test(0, 0) == 1.0


def test_paired_sign_test_counts_gains_and_losses_and_drops_ties():
    before = [0.0, 1.0, 0.5, 0.5, 0.2, 0.0, 0.0, 0.0]
    after = [1.0, 0.0, 0.5, 0.7, 0.2, 1.0, 1.0, 1.0]
    gained, lost, p = paired_sign_test(before, after)
    assert (gained, lost) == (5, 1)
    assert p == pytest.approx(2 * (1 + 6) / 64)
    with pytest.raises(ValueError, match=r"same questions \(2 against 1\)"):
        paired_sign_test([0.0, 1.0], [1.0])


def _bootstrap_ref(values, level, resamples, seed):
    """The percentile bootstrap written out: resample indices, take means, cut the tails."""
    x = np.array(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.array([x[rng.integers(0, len(x), size=len(x))].mean() for _ in range(resamples)])
    return list(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def test_bootstrap_ci_level_resamples_and_default_seed():
    # continuous values: the resampled means are (almost) all distinct, so the quantiles move
    # with the resample count and the seed (with a few 0/1 scores they would not)
    values = np.random.default_rng(42).uniform(size=25).tolist()
    # numpy draws a [resamples, n] block row by row, so the per-row draws above match it
    assert bootstrap_ci(values) == pytest.approx(_bootstrap_ref(values, 0.95, 2000, 0), rel=1e-12)
    assert bootstrap_ci(values) != pytest.approx(_bootstrap_ref(values, 0.95, 2001, 0), rel=1e-12)
    assert bootstrap_ci(values, level=0.5, resamples=301, seed=7) == pytest.approx(_bootstrap_ref(values, 0.5, 301, 7))


def test_bootstrap_ci_edges_single_value_empty_and_first_index():
    assert bootstrap_ci([0.7]) == [0.7, 0.7]
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    # only index 0 holds the 1: a resampler that never draws index 0 would give [0, 0]
    assert bootstrap_ci([1, 0, 0, 0], resamples=20000) == [0.0, 0.75]


def test_paired_diff_ci_is_the_bootstrap_of_b_minus_a_with_its_settings():
    a = [0.0, 1.0, 0.5, 0.2, 0.9, 0.1]
    b = [1, 1, 0, 1, 1, 0]  # integer scores (EM) against float ones
    diff = [y - x for x, y in zip(a, b)]
    cont_a, cont_b = np.random.default_rng(1).uniform(size=(2, 25)).tolist()
    cont = [y - x for x, y in zip(cont_a, cont_b)]
    assert paired_diff_ci(cont_a, cont_b) == pytest.approx(_bootstrap_ref(cont, 0.95, 2000, 0), rel=1e-12)
    assert paired_diff_ci(a, b, level=0.8, resamples=150, seed=3) == pytest.approx(_bootstrap_ref(diff, 0.8, 150, 3))
    em_a, em_b = [True, False, False, True], [True, True, False, False]  # booleans subtract as numbers
    assert paired_diff_ci(em_a, em_b, resamples=50) == pytest.approx(_bootstrap_ref([0, 1, 0, -1], 0.95, 50, 0))
    with pytest.raises(ValueError, match="same questions: 2 vs 1"):
        paired_diff_ci([0.0, 1.0], [1.0])


@pytest.mark.parametrize(
    "ci,expected",
    [
        ([-0.03, 0.01], "inconclusive"),  # touching -margin is not inside it
        ([-0.01, 0.03], "inconclusive"),
        ([0.0, 0.05], "inconclusive"),  # touching 0 does not exclude it
        ([-0.05, 0.0], "inconclusive"),
        ([0.0, 0.02], "equivalent"),
        ([0.001, 0.05], "different"),
        ([-0.05, -0.001], "different"),
    ],
)
def test_verdict_at_the_boundaries(ci, expected):
    assert verdict(ci, 0.03) == expected


def test_questions_needed_at_other_power_and_level_and_without_a_margin():
    a = 0.3 / math.sqrt(2)  # sample standard deviation 0.3
    # z_0.95 = 1.6448536, z_0.9 = 1.2815516: (2.9264052 · 0.3 / 0.03)² = 856.38 -> 857
    assert questions_needed([a, -a], 0.03, power=0.9, alpha=0.1) == 857
    assert questions_needed([a, -a], 0.0) is None
    assert questions_needed([a, -a], -0.03) is None
    assert questions_needed([0.4], 0.03) is None, "one difference has no spread"


# ---------------------------------------------------------------- verdicts.decide and sentence


def _scores():
    """Three strategies on four questions; some rows lack keys (they count as 0)."""
    a = [{"em": 1, "f1": 1.0, "answer_recall@5": 1.0}, {"f1": 0.5}, {"em": 1, "f1": 0.8, "answer_recall@5": 1.0}, {}]
    b = [{"em": 1, "f1": 0.6, "recall@5": 0.5}, {"f1": 0.5}, {"f1": 0.2, "recall@5": 1.0}, {"f1": 0.1}]
    return {"untuned": [{"f1": 1.0, "recall@5": 1.0}] * 4, "a": a, "b": b, "c": [dict(q) for q in a], "none": []}


@pytest.mark.parametrize("seed", [None, 5])
def test_decide_against_hand_means_and_the_bootstrap_written_out(seed):
    from statistics import NormalDist, stdev

    from fedrag.strategies.verdicts import decide

    scores = _scores()
    out = decide(scores, margin=0.1) if seed is None else decide(scores, margin=0.1, seed=seed)
    s = 0 if seed is None else seed
    ref = [1.0, 0.5, 0.8, 0.0]  # a's F1 (mean 0.575); b: 0.35; c = a, tied
    for name in ("a", "b", "c", "untuned"):
        qs = scores[name]
        key = "recall@5" if name in ("b", "untuned") else "answer_recall@5"
        assert out[name]["n"] == 4 and out[name]["recall_key"] == key
        assert out[name]["em_ci"] == pytest.approx(_bootstrap_ref([q.get("em", 0) for q in qs], 0.95, 2000, s))
        assert out[name]["f1_ci"] == pytest.approx(_bootstrap_ref([q.get("f1", 0) for q in qs], 0.95, 2000, s))
        assert out[name]["recall_ci"] == pytest.approx(_bootstrap_ref([q.get(key, 0) for q in qs], 0.95, 2000, s))
    assert out["none"]["n"] == 0 and out["none"]["recall_key"] == "answer_recall@5" and "best" not in out["none"]
    assert "best" not in out["untuned"], "the baseline is not ranked"
    assert out["a"]["verdict"] == "best" and out["a"]["tied"] == ["c"] and out["a"]["best"] == "a"
    assert out["b"]["best"] == "a" and out["c"]["best"] == "a"
    diff = [y - x for x, y in zip(ref, [0.6, 0.5, 0.2, 0.1])]
    assert out["b"]["f1_diff"] == pytest.approx(0.35 - 0.575)
    assert out["b"]["f1_diff_ci"] == pytest.approx(_bootstrap_ref(diff, 0.95, 2000, s))
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert out["b"]["questions_needed"] == math.ceil((z * stdev(diff) / 0.1) ** 2)
    assert out["c"]["verdict"] == "equivalent" and out["c"]["questions_needed"] is None


def test_the_best_is_by_mean_f1_over_a_strategys_own_questions_a_missing_f1_counting_0():
    """`long` answered 4 questions (F1 0.5 each: mean 0.5, sum 2.0), `short` 2 (mean 0.6, sum
    1.2): the mean ranks `short` first, a sum (or a sum times the count) `long`. `gap` has a
    row without an F1: as 0 its mean is 0.45; read as 1 it would be 0.95, the best."""
    from fedrag.strategies.verdicts import decide

    long = [{"id": f"q{i}", "f1": 0.5} for i in range(4)]
    short = [{"id": "q0", "f1": 0.7}, {"id": "q1", "f1": 0.5}]
    gap = [{"id": "q0", "f1": 0.9}, {"id": "q1"}]
    out = decide({"long": long, "short": short, "gap": gap})
    assert out["short"]["verdict"] == "best" and out["long"]["best"] == out["gap"]["best"] == "short"
    assert out["long"]["f1_diff"] == pytest.approx(((0.5 - 0.7) + (0.5 - 0.5)) / 2)  # paired on q0, q1
    assert (out["long"]["paired"], out["long"]["left_out"]) == (2, 2)
    assert out["gap"]["f1_diff"] == pytest.approx(((0.9 - 0.7) + (0.0 - 0.5)) / 2)


def test_decide_without_trained_strategies_gives_intervals_only():
    from fedrag.strategies.verdicts import decide

    out = decide({"untuned": [{"f1": 0.5}], "empty": []})
    assert set(out["untuned"]) == {"n", "em_ci", "f1_ci", "recall_ci", "recall_key"}


def _row(verdict, f1_diff=-0.0234, ci=(-0.051, 0.0049), need=None, n=40):
    return {"verdict": verdict, "f1_diff": f1_diff, "f1_diff_ci": list(ci), "best": "rag-seq", "questions_needed": need, "n": n}


def test_sentences_word_for_word():
    from fedrag.strategies.verdicts import sentence

    best = {"verdict": "best", "f1_ci": [0.4123, 0.6789], "n": 40, "tied": ["b", "c"]}
    assert sentence("a", best, 0.05) == "a has the best F1, tied with b, c (95% CI 41.2–67.9 on 40 questions)."
    assert sentence("a", {**best, "tied": []}, 0.05) == "a has the best F1 (95% CI 41.2–67.9 on 40 questions)."
    diff = "F1 -2.3 points against rag-seq (95% CI -5.1 to +0.5)"
    assert sentence("x", _row("equivalent"), 0.05) == f"x: {diff}: equivalent within ±5 points at n = 40."
    assert sentence("x", _row("different", n=12), 0.05) == f"x: {diff}: different at n = 12."
    more = "; about 311 questions would resolve ±5 points"
    assert sentence("x", _row("inconclusive", need=311), 0.05) == f"x: {diff}: inconclusive at n = 40{more}."
    assert sentence("x", _row("inconclusive"), 0.05) == f"x: {diff}: inconclusive at n = 40."


def test_decide_passes_its_seed_to_every_interval():
    """Continuous scores on 25 questions: each interval moves with the seed, so an interval
    drawn with another seed (or none) than the one given shows."""
    from fedrag.strategies.verdicts import decide, sentence

    rng = np.random.default_rng(3)
    rows = {n: [{"em": e, "f1": f, "recall@5": r} for e, f, r in rng.uniform(size=(25, 3))] for n in ("a", "b")}
    cols = {n: {k: [q[k] for q in rows[n]] for k in ("em", "f1", "recall@5")} for n in rows}
    best, other = ("a", "b") if sum(cols["a"]["f1"]) > sum(cols["b"]["f1"]) else ("b", "a")
    diff = [y - x for x, y in zip(cols[best]["f1"], cols[other]["f1"])]
    for seed in (None, 9):
        out = decide(rows) if seed is None else decide(rows, seed=seed)
        s = 0 if seed is None else seed
        assert _bootstrap_ref(cols["a"]["f1"], 0.95, 2000, s) != pytest.approx(_bootstrap_ref(cols["a"]["f1"], 0.95, 2000, 1))
        for n in rows:
            for key, col in (("em_ci", "em"), ("f1_ci", "f1"), ("recall_ci", "recall@5")):
                assert out[n][key] == pytest.approx(_bootstrap_ref(cols[n][col], 0.95, 2000, s), rel=1e-12)
        assert out[other]["f1_diff_ci"] == pytest.approx(_bootstrap_ref(diff, 0.95, 2000, s), rel=1e-12)
    assert sentence("x", _row("equivalent"), 0.6).endswith("equivalent within ±60 points at n = 40.")
