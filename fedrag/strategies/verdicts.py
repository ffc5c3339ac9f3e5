"""What a comparison can conclude at its test size: per-strategy confidence intervals,
each strategy's paired F1 difference to the best one, a verdict against the
equivalence margin, and how many questions would settle an open verdict."""

from __future__ import annotations

from fedrag.evaluate.stats import bootstrap_ci, paired_diff_ci, questions_needed, verdict

MARGIN = 0.03  # Lawton et al.'s "about equal": within 3 F1 points


def decide(scores: dict[str, list[dict]], margin: float = MARGIN, seed: int = 0) -> dict[str, dict]:
    """`{strategy: stats}` from per-question rows (`scores[name]`: one dict per test
    question, the same questions in the same order for every strategy; `untuned` is
    the baseline). Each strategy gets `em_ci`, `f1_ci` and `recall_ci` (Recall@5,
    or answer-recall@5 without gold ids); each trained one but the best (by F1) also
    `f1_diff` (its F1 minus the best's), `f1_diff_ci`, `verdict` and
    `questions_needed` (None when the per-question differences do not vary); the best
    one gets `tied`, the strategies with exactly its mean F1."""
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
    ref = [q.get("f1", 0.0) for q in trained[best]]
    for name, qs in trained.items():
        out[name]["best"] = best
        if name == best:
            # max() picks the first of equal means; say so rather than crown one of them
            tied = [k for k in trained if k != best and abs(mean[k] - mean[best]) < 1e-12]
            out[name].update(verdict="best", tied=tied)
            continue
        mine = [q.get("f1", 0.0) for q in qs]
        ci = paired_diff_ci(ref, mine, seed=seed)
        out[name].update(
            f1_diff=mean[name] - mean[best],
            f1_diff_ci=ci,
            verdict=verdict(ci, margin),
            questions_needed=questions_needed([b - a for a, b in zip(ref, mine)], margin),
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
    need = s.get("questions_needed")
    if s["verdict"] == "equivalent":
        return f"{name}: {diff}: equivalent within ±{pts:.0f} points at n = {s['n']}."
    if s["verdict"] == "different":
        return f"{name}: {diff}: different at n = {s['n']}."
    more = f"; about {need} questions would resolve ±{pts:.0f} points" if need else ""
    return f"{name}: {diff}: inconclusive at n = {s['n']}{more}."
