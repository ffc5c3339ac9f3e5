"""Metric values on hand-computed cases (SQuAD's official normalisation and F1)."""

import pytest

from fedrag.evaluate.metrics import exact_match, f1_score, mrr_at_k, ndcg_at_k, normalize_answer, precision_at_k, recall_at_k


def test_squad_normalisation_lowercases_and_drops_punctuation_articles_and_spaces():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("  An apple, a PEAR and the plum. ") == "apple pear and plum"
    assert exact_match("the Eiffel Tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower", "Paris"]) == 0.0
    assert exact_match("paris", ["Eiffel Tower", "Paris"]) == 1.0, "the best of the gold answers"


def test_f1_is_token_overlap_against_the_best_gold_answer():
    # "in paris france" vs "paris": precision 1/3, recall 1 -> 2·(1/3)·1/(4/3) = 0.5
    assert f1_score("in Paris, France", ["Paris"]) == pytest.approx(0.5)
    # "the red big dog" -> "red big dog" vs "big red cat": overlap 2, p = r = 2/3
    assert f1_score("the red big dog", ["big red cat"]) == pytest.approx(2 / 3)
    assert f1_score("red red", ["red"]) == pytest.approx(2 * 0.5 * 1 / 1.5), "a repeated token counts once in overlap"
    assert f1_score("nothing", ["Paris", "France"]) == 0.0
    assert f1_score("France", ["Paris", "France"]) == 1.0
    assert f1_score("", ["Paris"]) == 0.0


def test_mrr_and_recall_at_k_on_hand_computed_lists():
    ranked = ["d3", "d7", "d1", "d9"]
    assert mrr_at_k(ranked, ["d1"], 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, ["d7", "d1"], 10) == pytest.approx(1 / 2), "the first gold's rank"
    assert mrr_at_k(ranked, ["d9"], 3) == 0.0, "beyond k counts nothing"
    assert mrr_at_k(ranked, ["x"], 10) == 0.0
    assert recall_at_k(ranked, ["d1", "d9"], 3) == pytest.approx(0.5)
    assert recall_at_k(ranked, ["d1", "d9"], 4) == 1.0


def test_precision_and_ndcg_at_k_on_hand_computed_lists():
    """Golds d1, d9 in the ranking d3, d7, d1, d9: precision@3 = 1/3, @4 = 2/4, @10 = 2/10
    (counted over k); DCG@4 = 1/log2(4) + 1/log2(5) = 0.5 + 0.43068, ideal = 1 + 1/log2(3)
    = 1.63093, so nDCG@4 = 0.57064; a gold at rank 1 alone is 1.0."""
    ranked = ["d3", "d7", "d1", "d9"]
    assert precision_at_k(ranked, ["d1", "d9"], 3) == pytest.approx(1 / 3)
    assert precision_at_k(ranked, ["d1", "d9"], 4) == pytest.approx(0.5)
    assert precision_at_k(ranked, ["d1", "d9"], 10) == pytest.approx(0.2), "k, not the list's length, is the denominator"
    assert ndcg_at_k(ranked, ["d1", "d9"], 4) == pytest.approx(0.930677 / 1.630930, abs=1e-5)
    assert ndcg_at_k(ranked, ["d1", "d9"], 2) == 0.0
    assert ndcg_at_k(ranked, ["d3"], 10) == 1.0
    assert ndcg_at_k(ranked, ["d7"], 10) == pytest.approx(1 / 1.5849625, abs=1e-6)


def test_bootstrap_ci_of_a_hand_computed_case():
    """Resampled means of [0, 0, 0, 1] are Binomial(4, 1/4) / 4: P(≤ 0.5) = 0.949 and
    P(≤ 0.75) = 0.996, so the 2.5% and 97.5% quantiles are 0 and 0.75."""
    from fedrag.evaluate.stats import bootstrap_ci

    assert bootstrap_ci([0, 0, 0, 1], resamples=20000) == [0.0, 0.75]
    assert bootstrap_ci([0.4] * 7) == pytest.approx([0.4, 0.4])
    low, high = bootstrap_ci([0.0] * 50 + [1.0] * 50)
    assert low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.02) and high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.02)


@pytest.mark.parametrize(
    "ci,expected",
    [
        ([-0.02, 0.01], "equivalent"),
        ([0.005, 0.02], "equivalent"),
        ([0.01, 0.05], "different"),
        ([-0.09, -0.04], "different"),
        ([-0.05, 0.01], "inconclusive"),
        ([-0.01, 0.03], "inconclusive"),
    ],
)
def test_verdict_against_the_margin(ci, expected):
    from fedrag.evaluate.stats import verdict

    assert verdict(ci, 0.03) == expected


def test_questions_needed_is_the_textbook_paired_sample_size():
    """n = (z_0.975 + z_0.8)² σ² / Δ² = (1.95996 + 0.84162)² · 0.3² / 0.03² = 784.9 → 785."""
    import math

    from fedrag.evaluate.stats import questions_needed

    a = 0.3 / math.sqrt(2)  # [a, -a] has sample standard deviation 0.3
    assert questions_needed([a, -a], 0.03) == 785
    assert questions_needed([a, -a], 0.06) == 197  # a margin twice as wide needs a quarter of the questions
    assert questions_needed([0.1, 0.1, 0.1], 0.03) is None  # no variation: nothing to power


def test_decide_gives_each_strategy_its_verdict_against_the_best():
    from fedrag.strategies.verdicts import decide, sentence

    best = [{"em": float(i % 2), "f1": 0.2 + 0.6 * (i % 2), "recall@5": 1.0} for i in range(40)]
    same = [dict(q) for q in best]
    worse = [{**q, "f1": q["f1"] - 0.3} for q in best]
    noisy = [{**q, "f1": q["f1"] + (0.3 if i % 4 == 0 else -0.15)} for i, q in enumerate(best)]
    out = decide({"untuned": worse, "a": best, "b": same, "c": worse, "d": noisy}, margin=0.03)
    assert out["a"]["verdict"] == "best" and "verdict" not in out["untuned"]
    assert out["a"]["tied"] == ["b"] and "has the best F1, tied with b" in sentence("a", out["a"], 0.03)
    assert out["b"]["verdict"] == "equivalent" and out["b"]["f1_diff_ci"] == [0.0, 0.0]
    assert out["c"]["verdict"] == "different" and out["c"]["f1_diff"] == pytest.approx(-0.3)
    assert out["d"]["verdict"] == "inconclusive" and out["d"]["questions_needed"] > 40
    assert out["a"]["em_ci"][0] < 0.5 < out["a"]["em_ci"][1] and out["a"]["recall_ci"] == [1.0, 1.0]
    assert "inconclusive at n = 40; about" in sentence("d", out["d"], 0.03)
