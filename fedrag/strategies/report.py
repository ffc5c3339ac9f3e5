"""A comparison's report: the Markdown table, the advisor, the quality-vs-cost plot."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from fedrag._env import require
from fedrag.strategies.choices import StrategyName

# fedrag's own joint strategies, from the names it has (a user's strategy may be named anything)
JOINTS = tuple(name for name in get_args(StrategyName) if name.startswith("joint"))


def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def markdown_table(result: dict) -> str:
    """One row per strategy: quality (EM, F1, retrieval) and cost (train, search)."""
    rows = result["rows"]
    gold = any("recall@5" in r for r in rows)
    ret_key, ret_name = ("recall@5", "Recall@5") if gold else ("answer_recall@5", "answer-recall@5")
    head = ["strategy", "decoding", "EM", "F1", ret_name, "train s", "train FLOPs", "search s", "search FLOPs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["strategy"],
            r.get("decoding", ""),
            _fmt(r.get("em")),
            _fmt(r.get("f1")),
            _fmt(r.get(ret_key)),
            _fmt(r["train_s"], 0),
            _fmt(r["train_flops"]),
            _fmt(r["search_s"], 0) if r.get("search_s") else "–",
            _fmt(r["search_flops"]) if r.get("search_flops") else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"* {name} skipped: {why}." for name, why in result.get("skipped", {}).items()]
    notes += [_chosen(r) for r in rows if r.get("best_lrs")]
    notes.append(
        f"* {rows[0].get('n', '?')} test questions; train = the final run's optimizer steps; search = every "
        "grid point of the learning-rate search (the chosen run included); FLOPs are estimates (2·N·T forward, "
        "×3 with backward)."
    )
    return "\n".join(lines + [""] + notes) + "\n" + paired_table(result) + verdict_lines(result)


def _chosen(row: dict) -> str:
    """The learning rates a search chose, and which of them only won a tie."""
    said = []
    for key, name in (("lr_generator", "lr-generator"), ("lr_retriever", "lr-retriever")):
        if key not in row["best_lrs"]:
            continue
        n = row.get("lr_ties", {}).get(key)
        tie = f" (a tie of {n} points on validation: the first was kept)" if n else ""
        said.append(f"{name} {row['best_lrs'][key]:g}{tie}")
    return f"* {row['strategy']}: the search chose {', '.join(said)}."


def verdict_lines(result: dict) -> str:
    """One sentence per strategy: equal, different or undecided against the best, at this n."""
    from fedrag.strategies.verdicts import MARGIN, sentence

    margin = result.get("settings", {}).get("margin", MARGIN)
    judged = [r for r in result["rows"] if r.get("verdict")]
    if not judged:
        return ""
    if len(judged) == 1:  # "best" of one: nothing was compared
        r = judged[0]
        lo, hi = r["f1_ci"]
        return (
            f"\nVerdicts: none; {r['strategy']} is the only trained strategy "
            f"(F1 95% CI {100 * lo:.1f}–{100 * hi:.1f} on {r['n']} questions).\n"
        )
    said = [sentence(r["strategy"], r, margin) for r in judged]
    head = f"\nVerdicts (paired bootstrap, 95%; equivalent = the F1 difference's CI inside ±{100 * margin:.0f} points):\n\n"
    return head + "".join(f"- {s}\n" for s in said)


def paired_table(result: dict) -> str:
    """Question by question: how many test questions each strategy got right (EM) or
    scored higher on (F1) than the untuned pipeline and than the best strategy, and how
    many it lost, with the sign test's p; empty when no per-question rows were saved."""
    paired = result.get("paired") or {}
    if not paired:
        return ""

    def cell(d: dict | None, key: str) -> str:
        return f"+{d[key][0]} / −{d[key][1]} (p {d[key][2]:.2g})" if d else "–"

    best = next(iter(paired.values()))["best"]
    head = ["strategy", "EM vs untuned", "F1 vs untuned", f"EM vs {best}", f"F1 vs {best}"]
    lines = [
        "",
        "Paired, question by question (gained / lost, two-sided sign test):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, d in paired.items():
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    cell(d.get("vs_untuned"), "em"),
                    cell(d.get("vs_untuned"), "f1"),
                    cell(d.get("vs_best"), "em"),
                    cell(d.get("vs_best"), "f1"),
                ]
            )
            + " |"
        )
    left = [
        f"* {name} against {ref}: {d[label]['left_out']} questions only one of them answered were left out "
        f"({d[label]['n']} paired by question id)."
        for name, d in paired.items()
        for label, ref in (("vs_untuned", "untuned"), ("vs_best", best))
        if (d.get(label) or {}).get("left_out")
    ]
    return "\n".join(lines + ([""] + left if left else [])) + "\n"


def advise(has_gold: bool, lrs_known: bool, result: dict | None = None) -> list[str]:
    """Lawton et al. (2025)'s decision rule for the user's situation, and, after a
    comparison, the measured figures that back or contradict it."""
    lines = []
    if has_gold:
        lines.append(
            "Your training data has context labels (gold passage ids). Lawton et al. (2025) found independent "
            "fine-tuning (generator on retrieved contexts, retriever contrastive on the gold passages) about "
            "as good as the joint methods at a fraction of the compute, after a learning-rate search."
        )
    elif lrs_known:
        lines.append(
            "No context labels, learning rates known: joint RAG-Sequence/RAG-Token (or two-phase) train "
            "the retriever from the generator's signal; with no search to pay for, one joint run is the "
            "simplest choice."
        )
    else:
        lines.append(
            "No context labels and a learning-rate search is needed: prefer two-phase. Its phases decouple, "
            "so its search is two 1-D grids (|G| + |R| runs) where joint training needs the 2-D grid "
            "(|G| × |R| runs), for about equal EM/F1."
        )
    if not result:
        return lines
    rows = {r["strategy"]: r for r in result["rows"] if r["strategy"] != "untuned"}
    if not rows:
        return lines
    if len(rows) == 1:  # a verdict, a spread or a rule needs two trained strategies to compare
        (only,) = rows.values()
        return lines + [
            f"Only {only['strategy']} was trained (F1 {only.get('f1', 0):.3f}): this run compares it with the "
            "untuned pipeline alone and says nothing about the other strategies; compare two or more to test the rule."
        ]
    cheapest = min(rows.values(), key=lambda r: r["train_flops"] or float("inf"))
    f1s = [r.get("f1", 0.0) for r in rows.values()]
    lines.append(
        f"Measured: F1 spread across strategies {100 * (max(f1s) - min(f1s)):.1f} points; "
        f"cheapest training: {cheapest['strategy']}."
    )
    for r in sorted(rows.values(), key=lambda r: r["train_flops"]):
        ratio = r["train_flops"] / cheapest["train_flops"] if cheapest["train_flops"] else float("nan")
        search = (
            f", search {r['search_flops'] / cheapest['train_flops']:.1f}x"
            if r.get("search_flops") and cheapest["train_flops"]
            else ""
        )
        lines.append(f"  {r['strategy']}: F1 {r.get('f1', 0):.3f}, training {ratio:.1f}x the cheapest's FLOPs{search}")
    lines += _verdict_advice(rows, cheapest, has_gold)
    if "two-phase" in rows and any(k in JOINTS for k in rows) and rows["two-phase"].get("search_flops"):
        joint = min(
            (r for k, r in rows.items() if k in JOINTS and r.get("search_flops")),
            key=lambda r: r["search_flops"],
            default=None,
        )
        if joint:
            cheaper = rows["two-phase"]["search_flops"] < joint["search_flops"]
            lines.append(
                f"Search: two-phase {rows['two-phase']['search_flops']:.2e} FLOPs vs {joint['strategy']} "
                f"{joint['search_flops']:.2e}: "
                + ("backs" if cheaper else "contradicts")
                + " the rule that two-phase's 1-D searches are cheaper than joint's 2-D grid."
            )
    return lines


def _verdict_advice(rows: dict, cheapest: dict, has_gold: bool) -> list[str]:
    """What the verdicts (not the point estimates) say about the paper's rule."""
    judged = {k: r for k, r in rows.items() if r.get("verdict")}
    if not judged:
        return ["No per-question scores: the gaps above cannot be told from the test set's noise."]
    best = next(k for k, r in judged.items() if r["verdict"] == "best")
    worse = [k for k, r in judged.items() if r["verdict"] == "different"]
    open_ = [k for k, r in judged.items() if r["verdict"] == "inconclusive"]
    need = max((judged[k].get("questions_needed") or 0 for k in open_), default=0)
    n = judged[best].get("n")
    lines = []
    if not worse and not open_:
        lines.append(
            f"Every strategy is equivalent to {best} within the margin at n = {n}: this run supports "
            f"'about equal'; choose the cheapest, {cheapest['strategy']}."
        )
    elif worse:
        lines.append(
            f"{', '.join(worse)} {'is' if len(worse) == 1 else 'are'} worse than {best} at n = {n}: this run "
            "rejects 'about equal' for " + ("it." if len(worse) == 1 else "them.")
        )
    if open_:
        lines.append(
            f"{', '.join(open_)}: not resolved at n = {n}"
            + (f"; about {need} test questions would settle the largest open gap." if need else ".")
        )
    rule = "independent" if has_gold else None
    if rule and rule in judged and judged[rule]["verdict"] == "different":
        lines.append(
            "The measured data contradicts the paper's rule for labelled data (independent at about equal "
            "quality): here independent is worse than the best strategy; prefer "
            f"{best} unless its extra training cost matters more."
        )
    elif rule and rule in judged and judged[rule]["verdict"] in ("best", "equivalent"):
        lines.append(_rule_backed(rows, rows[rule], best))
    return lines


def _rule_backed(rows: dict, ind: dict, best: str) -> str:
    """The rule has two halves, about equal quality *and* a fraction of the compute: an
    independent row at the best's quality backs all of it only if it was also the cheapest
    to train."""
    quality = "independent is the best" if ind["strategy"] == best else f"independent is equivalent to {best}"
    others = [r for k, r in rows.items() if k != ind["strategy"] and r.get("train_flops")]
    if not others or not ind.get("train_flops"):
        return f"This run backs the quality half of the paper's rule: {quality} in F1; its cost was not compared."
    cheap = min(others, key=lambda r: r["train_flops"])
    ratio = ind["train_flops"] / cheap["train_flops"]
    if ratio < 1:
        return (
            f"This run backs the paper's rule for labelled data: {quality}, and the cheapest to train "
            f"({ratio:.2g}x the FLOPs of the next, {cheap['strategy']})."
        )
    return (
        f"This run backs only the quality half of the paper's rule: {quality} in F1, but it cost "
        f"{ratio:.2g}x the training FLOPs of {cheap['strategy']}, the cheapest."
    )


def plot_quality_vs_cost(result: dict, path: str | Path, title: str | None = None) -> Path:
    """F1 against training FLOPs (and train + search when searched), one point per strategy."""
    require("matplotlib", "fedrag[plot]")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    searched = any(r.get("search_flops") for r in result["rows"])
    for r in result["rows"]:
        f1 = r.get("f1", 0.0)
        if r["strategy"] == "untuned":  # nothing trained: a reference line, not a point at zero cost
            ax.axhline(f1, color="grey", linestyle="--", linewidth=0.8, label="untuned")
            continue
        x = max(r["train_flops"], 1.0)
        ci = r.get("f1_ci")
        yerr = [[f1 - ci[0]], [ci[1] - f1]] if ci else None
        ax.errorbar([x], [f1], yerr=yerr, fmt="o", capsize=3, markersize=5)
        ax.annotate(r["strategy"], (x, f1), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if r.get("search_flops"):
            ax.scatter([r["search_flops"]], [f1], marker="x", color="grey")
            ax.plot([x, r["search_flops"]], [f1] * 2, color="grey", linewidth=0.6, linestyle=":")
    xs = [max(r["train_flops"], 1.0) for r in result["rows"] if r["strategy"] != "untuned"]
    xs += [r["search_flops"] for r in result["rows"] if r.get("search_flops")]
    if xs and max(xs) / min(xs) >= 10:  # a log axis only where the costs span decades
        ax.set_xscale("log")
    else:  # a narrow range: a linear axis whose few labels cannot overlap
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax.set_xlabel("training FLOPs (estimated" + ("; x = with the learning-rate search)" if searched else ")"))
    ax.set_ylabel("test F1" + (" (bars: 95% CI)" if any(r.get("f1_ci") for r in result["rows"]) else ""))
    n = next((r.get("n") for r in result["rows"] if r.get("n")), None)
    ax.set_title((title or "fedrag compare: quality vs cost") + (f" (n = {n} test questions)" if n else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    if any(r["strategy"] == "untuned" for r in result["rows"]):
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
