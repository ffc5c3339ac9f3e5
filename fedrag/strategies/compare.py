"""Compare fine-tuning strategies on the user's own data: quality against cost.

Every applicable strategy is trained from the same base models (optionally after a
phase-aware learning-rate search), evaluated on the test set with the decoding that
matches its training, and reported next to the untuned pipeline. Results are written
per strategy as they finish (`OUT/strategies/NAME.json`, with its per-question scores in
`NAME.rows.jsonl`), so an interrupted comparison resumes where it stopped; a finished
strategy is never run twice. The per-question scores pair every strategy with the untuned
pipeline and with the best strategy (questions gained/lost, sign test), which says whether
a gap between strategies is larger than the test set's noise.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fedrag._io import atomic_write_json
from fedrag._settings import check_choice, names, same, setting
from fedrag.data.types import Example, Passage
from fedrag.errors import FedragError
from fedrag.generate.decoding import RETRIEVAL_GAMMA, GenerationSettings, RagSequenceMode
from fedrag.rag import RAGSystem
from fedrag.strategies.base import total_cost
from fedrag.strategies.compare_store import cached_row, check_resume, identity, paired, question_rows, save_row
from fedrag.strategies.library import STRATEGIES, plan_from_names
from fedrag.strategies.lr_search import search_lr
from fedrag.strategies.settings import PlanSettings, SearchSettings, StrategyName
from fedrag.strategies.verdicts import MARGIN, decide
from fedrag.train.loop import TrainConfig

NEEDS_GOLD = {
    "independent": "its retriever stage is contrastive and needs gold passage ids (context labels)",
    "multi-task": "its loss has a contrastive term that needs gold passage ids (context labels)",
}


@dataclass
class CompareSettings:
    """What a comparison runs; stored in OUT so a resume with other settings is refused."""

    # which rows are wanted, and how results are read (margin): not what a strategy's row depends on, so a
    # rerun may add strategies to a comparison (or leave some out) without training the rest again
    strategies: list[str] = setting(
        help=f"the strategies to train and compare, comma-separated ({', '.join(STRATEGIES)}, or module:attribute)",
        factory=lambda: list(STRATEGIES),
        shown="all",
        identity=False,
    )
    retriever: str = same(PlanSettings, "retriever")
    generator: str = same(PlanSettings, "generator")
    top_k: int = same(PlanSettings, "top_k")
    train: dict = setting(
        help="TrainConfig fields; a stage's own defaults replace those not named (not in 'explicit' when given)",
        factory=dict,
        cli=False,
    )
    search: bool = setting(False, "phase-aware learning-rate search per strategy")
    lrs_generator: list[float] = same(SearchSettings, "lrs_generator")
    lrs_retriever: list[float] = same(SearchSettings, "lrs_retriever")
    max_new_tokens: int = same(GenerationSettings, "max_new_tokens")
    rag_sequence: RagSequenceMode = setting(
        "fast",
        "how RAG-Sequence-trained strategies are decoded: fast (k scoring rows; the "
        "default here, as every strategy is decoded) or thorough (k² rows, eval's "
        "default); docs/results.md measures their agreement",
    )
    margin: float = setting(
        MARGIN,
        "F1 difference (as a fraction: 0.03 = 3 points) within which two strategies count as equivalent",
        identity=False,
    )
    data: dict = setting(help="input paths and sizes", factory=dict, cli=False)

    def __post_init__(self):
        grids = SearchSettings(tuple(self.lrs_generator), tuple(self.lrs_retriever))  # validated as search-lr's
        self.lrs_generator, self.lrs_retriever = list(grids.lrs_generator), list(grids.lrs_retriever)
        for name in self.strategies:
            if ":" in name:  # a user's own (module:attribute): one that does not import ends the run before anything is written
                plan_from_names(name, None, top_k=self.top_k)
            else:
                check_choice(name, StrategyName, "--strategies")
        twice = sorted({name for name in self.strategies if self.strategies.count(name) > 1})
        if twice:
            raise FedragError(f"--strategies names {', '.join(twice)} more than once")
        if not self.strategies:
            raise FedragError("give at least one strategy to compare")
        if str(self.generator).lower() == "none":
            raise FedragError("compare scores answers: it needs a generator (--generator none is for retriever-only commands)")
        from fedrag.errors import check_finite

        check_finite(self)
        if self.top_k < 1 or self.max_new_tokens < 1:
            raise FedragError("--top-k and --max-new-tokens must be >= 1")
        if not 0 < self.margin < 1:
            raise FedragError(f"--margin is a fraction of F1 in (0, 1), got {self.margin}")
        GenerationSettings(rag_sequence=self.rag_sequence)  # validated where it is defined


# the settings a resume need not match (`identity=False`): a comparison's rows do not depend on them
REPORTED = names(CompareSettings, identity=False)


def applicable(strategies: list[str], examples: list[Example]) -> tuple[list[str], dict[str, str]]:
    """The strategies that can run on `examples`, and why the others are skipped."""
    has_gold = all(e.gold_ids for e in examples)
    skipped = {s: NEEDS_GOLD[s] for s in strategies if s in NEEDS_GOLD and not has_gold}
    return [s for s in strategies if s not in skipped], skipped


def compare(
    settings: CompareSettings,
    passages: list[Passage],
    train: list[Example],
    test: list[Example],
    val: list[Example] | None,
    out: str | Path,
    build_rag,
    log=print,
    report_to: str = "none",
) -> dict:
    """Run the comparison into `out`; `build_rag(shared_retriever=...)` returns fresh
    base models each call (a shared retriever for strategies that train the passage side).

    Returns (and writes to `OUT/compare.json`) `{"settings", "rows", "skipped"}`, one
    row per strategy plus the untuned baseline: EM, F1, Recall@5 (with gold ids) and
    answer-recall@5, train seconds and FLOPs, search seconds and FLOPs. `report_to`:
    each strategy's training is tracked as run `OUT-name/strategy/stage` (files in
    `OUT/tracking`); it is not part of the settings a resume must match."""
    run, skipped = applicable(settings.strategies, train)
    plans = {name: plan_from_names(name, None, top_k=settings.top_k) for name in run}  # before OUT is touched
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_resume(out, identity(settings, passages, train, test, val), log, reported=REPORTED)
    (out / "strategies").mkdir(parents=True, exist_ok=True)
    for name, why in skipped.items():
        log(f"compare: skipping {name}: {why}")
    if settings.search and not val:
        raise FedragError("the learning-rate search needs validation data (--val, or carve it from --train)")
    cfg = TrainConfig(**settings.train)
    rows = [
        cached_row(out, "untuned") or save_row(out, "untuned", _baseline(build_rag(shared_retriever=False), test, settings, log))
    ]
    for i, name in enumerate(run, 1):
        plan = plans[name]
        # what each phase trains with, a stage's own defaults included: a row trained with other ones is stale
        phases = json.loads(json.dumps([p.config(cfg).tracked() for p in plan.phases]))
        row = cached_row(out, name)
        if row and _stale(row.get("phases"), phases):
            log(f"compare: [{i}/{len(run)}] {name}: trained with other phase settings (a stage's defaults changed)")
            row = None
        if row:
            log(f"compare: [{i}/{len(run)}] {name}: already finished (F1 {row.get('f1', 0):.3f}), skipped")
        else:
            log(f"compare: [{i}/{len(run)}] {name}: training{' with LR search' if settings.search else ''} ...")
            scfg = replace(cfg, report_to=report_to, run_name=f"{out.name}/{name}", tracking_dir=str(out / "tracking" / name))
            rag = build_rag(shared_retriever=plan.shared_retriever)
            row, questions = _one(name, plan, rag, train, val, test, scfg, settings, log)
            row = save_row(out, name, ({**row, "phases": phases}, questions))
            log(
                f"compare: [{i}/{len(run)}] {name}: EM {row.get('em', 0):.3f} F1 {row.get('f1', 0):.3f} "
                f"(train {row['train_s']:.0f}s, search {row['search_s']:.0f}s)"
            )
        rows.append(row)
    per_question = {r["strategy"]: question_rows(out, r["strategy"]) for r in rows}
    stats = decide({k: v for k, v in per_question.items() if v}, settings.margin, seed=cfg.seed)
    rows = [{**r, **stats.get(r["strategy"], {})} for r in rows]
    result = {"settings": asdict(settings), "rows": rows, "skipped": skipped, "paired": paired(out, rows)}
    atomic_write_json(out / "compare.json", result)
    return result


def _stale(recorded: list[dict] | None, phases: list[dict]) -> bool:
    """A cached row trained with other phase settings than `phases`. A row written before
    the record (None) is taken as it is, and a setting that no longer exists (recorded
    by an older fedrag) is not compared."""
    if recorded is None:
        return False
    return len(recorded) != len(phases) or any({k: r.get(k) for k in p} != p for r, p in zip(recorded, phases))


KEEP = (
    "em",
    "f1",
    "recall@1",
    "recall@5",
    "recall@20",
    "precision@1",
    "precision@5",
    "mrr@10",
    "ndcg@10",
    "answer_recall@1",
    "answer_recall@5",
    "answer_recall@20",
    "n",
)


def _test_metrics(rag, test: list[Example], settings: GenerationSettings, top_k: int) -> tuple[dict, list[dict]]:
    """The test set's metrics, and its per-question rows (id, prediction and scores)."""
    from fedrag.evaluate import evaluate

    t0 = time.perf_counter()
    m = evaluate(RAGSystem(rag.searcher, rag.generator, top_k=top_k, settings=settings), test, progress=False)
    questions = [{k: q[k] for k in ("id", "prediction", *KEEP) if k in q} for q in m.pop("_rows")]
    return {**{k: m[k] for k in KEEP if k in m}, "eval_s": time.perf_counter() - t0}, questions


def _baseline(rag, test, settings: CompareSettings, log) -> tuple[dict, list[dict]]:
    log("compare: evaluating the untuned pipeline ...")
    gen = GenerationSettings("concat", max_new_tokens=settings.max_new_tokens)
    metrics, questions = _test_metrics(rag, test, gen, settings.top_k)
    return {
        "strategy": "untuned",
        "decoding": "concat",
        **metrics,
        "train_s": 0.0,
        "train_flops": 0.0,
        "search_s": 0.0,
        "search_flops": 0.0,
        "steps": 0,
    }, questions


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _one(name: str, plan, rag, train, val, test, cfg: TrainConfig, settings: CompareSettings, log) -> tuple[dict, list[dict]]:
    """`plan` trained (after its LR search with `settings.search`) and evaluated on `test`:
    its row, named `name` as the comparison was asked for it, and its per-question scores."""
    search = {"search_s": 0.0, "search_flops": 0.0, "search_points": 0}
    if settings.search:

        def show(p):
            # a phase that trains the retriever is selected without generating: it has no F1 to show
            recall = "recall@5" if "recall@5" in p else "answer_recall@5"
            shown = [f"{label} {p[k]:.3f}" for label, k in (("F1", "f1"), ("R@5", recall)) if _finite(p.get(k))]
            lrs = " ".join(f"{k}={p[k]:g}" for k in p["searched"])
            log(f"compare:   {name} phase {p['phase']} {lrs} -> {' '.join(shown)}")

        report = search_lr(
            plan, rag, train, val, cfg, settings.lrs_generator, settings.lrs_retriever, top_k=settings.top_k, on_point=show
        )
        results = report["final_results"]
        search = {
            "search_s": report["search_cost"]["wall_s"],
            "search_flops": report["search_cost"]["flops"],
            "search_points": len(report["points"]),
            "search_mode": report["mode"],
            "best_lrs": {k: report["best"][k] for k in report["chosen"]},
            "lr_ties": report["ties"],
        }
    else:
        results = plan.run(rag, train, cfg, log=lambda m: log(f"compare:   {name} {m}"))  # e.g. which step was kept
    cost = total_cost(results, name)["total"]
    dec = plan.decoding
    gen = GenerationSettings(
        dec["decoding"],
        gamma=dec.get("gamma", RETRIEVAL_GAMMA),
        max_new_tokens=settings.max_new_tokens,
        rag_sequence=settings.rag_sequence,
    )
    metrics, questions = _test_metrics(rag, test, gen, settings.top_k)
    decoding = f"{dec['decoding']} ({settings.rag_sequence})" if dec["decoding"] == "rag-sequence" else dec["decoding"]
    return {
        "strategy": name,
        "decoding": decoding,
        **metrics,
        "train_s": cost["wall_s"],
        "train_flops": cost["flops"],
        "steps": cost["steps"],
        **search,
    }, questions
