"""What a comparison can conclude at its test size: per-strategy confidence intervals,
each strategy's paired F1 difference to the best one, a verdict against the
equivalence margin, and how many questions would settle an open verdict."""

from __future__ import annotations

from fedrag.errors import FedragError
from fedrag.evaluate.stats import bootstrap_ci, paired_diff_ci, questions_needed, verdict

MARGIN = 0.03  # Lawton et al.'s "about equal": within 3 F1 points


def by_question(ref: list[dict], mine: list[dict], key: str) -> tuple[list[float], list[float], int]:
    """`key`'s scores of the questions both per-question row lists hold, paired by question
    `id` (a repeated id by its occurrence: the second `q7` of one with the second of the
    other) in `ref`'s order, and how many questions only one of them holds (left out);
    row order plays no part.

    Raises:
        FedragError: the two share no question.
    """
    a, b = _keyed(ref), _keyed(mine)
    both = [k for k in a if k in b]
    if not both:
        raise FedragError("two strategies' per-question rows share no question id: they cannot be paired")
    return [a[k].get(key, 0.0) for k in both], [b[k].get(key, 0.0) for k in both], len(a) + len(b) - 2 * len(both)


def _keyed(rows: list[dict]) -> dict[tuple, dict]:
    """`{(id, occurrence): row}`: a test file may repeat an id, which must still pair one to
    one. Rows built in memory without an `id` are keyed by their position (a comparison's
    saved rows always have one: `compare_store.question_rows` refuses them otherwise)."""
    seen: dict = {}
    out = {}
    for i, q in enumerate(rows):
        qid = q.get("id", i)
        seen[qid] = seen.get(qid, -1) + 1
        out[(qid, seen[qid])] = q
    return out


def decide(scores: dict[str, list[dict]], margin: float = MARGIN, seed: int = 0) -> dict[str, dict]:
    """`{strategy: stats}` from per-question rows (`scores[name]`: one dict per test
    question, with its `id`; `untuned` is the baseline). Each strategy gets `em_ci`,
    `f1_ci` and `recall_ci` (Recall@5, or answer-recall@5 without gold ids); each trained
    one but the best (by F1) also `f1_diff` (its F1 minus the best's on the questions both
    answered, paired by id: [`by_question`][by_question]), `f1_diff_ci`, `verdict`,
    `questions_needed` (None when the per-question differences do not vary), `paired` (how
    many questions were paired) and `left_out` (how many only one of the two holds); the
    best one gets `tied`, the strategies with exactly its mean F1."""
    out: dict[str, dict] = {}
    for name, qs in scores.items():
        key = "recall@5" if qs and "recall@5" in qs[0] else "answer_recall@5"
        out[name] = {
            "n": len(qs),
            "em_ci": bootstrap_ci([q.get("em", 0.0) for q in qs], seed=seed),
            "f1_ci": bootstrap_ci([q.get("f1", 0.0) for q in qs], seed=seed),
            "recall_ci": bootstrap_ci([q.get(key, 0.0) for q in qs], seed=seed),
            "recall_key": key,
        }
    trained = {k: v for k, v in scores.items() if k != "untuned" and v}
    if not trained:
        return out
    mean = {k: sum(q.get("f1", 0.0) for q in v) / len(v) for k, v in trained.items()}
    best = max(mean, key=mean.get)
    for name, qs in trained.items():
        out[name]["best"] = best
        if name == best:
            # max() picks the first of equal means; say so rather than crown one of them
            tied = [k for k in trained if k != best and abs(mean[k] - mean[best]) < 1e-12]
            out[name].update(verdict="best", tied=tied)
            continue
        ref, mine, left = by_question(trained[best], qs, "f1")
        ci = paired_diff_ci(ref, mine, seed=seed)
        out[name].update(
            f1_diff=(sum(mine) - sum(ref)) / len(mine),
            f1_diff_ci=ci,
            verdict=verdict(ci, margin),
            questions_needed=questions_needed([b - a for a, b in zip(ref, mine)], margin),
            paired=len(mine),
            left_out=left,
        )
    return out


def sentence(name: str, s: dict, margin: float) -> str:
    """One sentence stating a strategy's verdict against the best one."""
    pts = 100 * margin
    if s.get("verdict") == "best":
        lo, hi = s["f1_ci"]
        tied = f", tied with {', '.join(s['tied'])}" if s.get("tied") else ""
        return f"{name} has the best F1{tied} (95% CI {100 * lo:.1f}–{100 * hi:.1f} on {s['n']} questions)."
    lo, hi = (100 * v for v in s["f1_diff_ci"])
    diff = f"F1 {100 * s['f1_diff']:+.1f} points against {s['best']} (95% CI {lo:+.1f} to {hi:+.1f})"
    need, n = s.get("questions_needed"), s.get("paired", s["n"])
    left = f" ({s['left_out']} questions only one of them answered left out)" if s.get("left_out") else ""
    if s["verdict"] == "equivalent":
        return f"{name}: {diff}: equivalent within ±{pts:.0f} points at n = {n}{left}."
    if s["verdict"] == "different":
        return f"{name}: {diff}: different at n = {n}{left}."
    more = f"; about {need} questions would resolve ±{pts:.0f} points" if need else ""
    return f"{name}: {diff}: inconclusive at n = {n}{left}{more}."
