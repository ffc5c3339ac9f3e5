"""Learning-rate search that follows a strategy's phases (Lawton et al. 2025, §4).

* **phase-wise** (every phase trains one side: independent, two-phase, RA-DIT): search
  phase 1's learning rate, keep the best phase-1 model, then search phase 2's from
  it, and so on. Phase 1 is never retrained for a phase-2 point, so the cost is the
  *sum* of the 1-D grids; for independent the phases do not depend on each other
  and this is its two independent 1-D searches.
* **grid** (a phase trains both sides: joint RAG-Sequence / RAG-Token): the 2-D grid,
  every point trained from the initial models.

Selection is on validation data: a phase that trains the generator by F1 (EM breaks
ties), decoded as that phase trains; one that trains the retriever by Recall@5 (or
answer-recall@5 without gold ids), which needs no generation. A grid point is judged
as the last phase that trains the generator answers. The best models stay
in `rag`: they *are* the final training at the chosen learning rates, so no
retraining follows, and their cost is reported apart from the search's.
"""

from __future__ import annotations

import itertools

from fedrag.data.types import Example
from fedrag.errors import FedragError
from fedrag.generate.decoding import RETRIEVAL_GAMMA, GenerationSettings
from fedrag.retrieve.choices import TOP_K
from fedrag.strategies.base import Strategy
from fedrag.train.cost import Cost
from fedrag.train.config import TrainConfig
from fedrag.train.loop import StageResult, train_stage
from fedrag.train.state import get_state, set_state
from fedrag.train.validate import retrieval_key, validation_fn


def search_mode(strategy: Strategy) -> str:
    """`grid` when a phase trains both sides, else `phase-wise`."""
    return "grid" if any(len(p.stage.trains) > 1 for p in strategy.phases) else "phase-wise"


def search_lr(
    strategy: Strategy,
    rag,
    train: list[Example],
    val: list[Example],
    cfg: TrainConfig,
    lrs_generator: list[float],
    lrs_retriever: list[float],
    mode: str = "auto",
    top_k: int = TOP_K,
    on_point=None,
) -> dict:
    """Search, leave the best models in `rag` and return the report:
    `points` (each with its phase, learning rates, validation metrics and cost),
    `best` learning rates, `chosen` (which of them the search chose; the others are
    the configured values), `ties` (for a rate chosen among points with equal validation
    scores, how many tied: the first was kept), `search_cost` (every point), `final_cost` (the chosen
    path only), `stage_runs` and `final_results` ([`StageResult`][StageResult] list)."""
    if not val:
        raise FedragError("the learning-rate search needs validation examples")
    if not lrs_generator or not lrs_retriever:
        raise FedragError("give at least one learning rate per model")
    mode = search_mode(strategy) if mode == "auto" else mode
    if mode not in ("phase-wise", "grid"):
        raise FedragError(f"unknown search mode '{mode}'")
    if mode == "phase-wise" and search_mode(strategy) == "grid":
        raise FedragError(f"strategy '{strategy.name}' trains both sides in one phase: its search is the 2-D grid")
    runner = {"phase-wise": _phase_wise, "grid": _grid}[mode]
    if strategy.shared_retriever and not rag.retriever.shared:  # as Strategy.run does
        rag.retriever.share()
        rag.sync_store()
    points, final = runner(strategy, rag, train, val, cfg, lrs_generator, lrs_retriever, top_k, on_point or (lambda p: None))
    search_cost = sum((Cost(**{k: v for k, v in p["cost"].items()}) for p in points), Cost(name="lr-search"))
    final_cost = sum((r.cost for r in final), Cost(name="final"))
    best = {"lr_generator": cfg.lr_generator, "lr_retriever": cfg.lr_retriever}
    ties = {}
    for p in points:
        if p.get("chosen"):
            best.update({k: p[k] for k in p["chosen"]})
            ties.update({k: p["ties"] for k in p["chosen"] if p.get("ties", 1) > 1})
    return {
        "strategy": strategy.name,
        "mode": mode,
        "best": best,
        "chosen": [k for k in ("lr_generator", "lr_retriever") if any(k in p.get("chosen", ()) for p in points)],
        "ties": ties,
        "points": points,
        "stage_runs": sum(p["stage_runs"] for p in points),
        "search_cost": search_cost.to_dict(),
        "final_cost": final_cost.to_dict(),
        "final_results": final,
    }


def _evaluator(strategy: Strategy, stage, top_k: int):
    """Validation for a phase: answers (decoded as `stage` trains) if it trains the generator."""
    if "generator" in stage.trains:
        dec = getattr(stage, "decoding", None) or strategy.decoding
        settings = GenerationSettings(dec["decoding"], gamma=dec.get("gamma", RETRIEVAL_GAMMA))
        fn = validation_fn(True, top_k, settings=settings)
        return fn, lambda m: (m.get("f1", 0.0), m.get("em", 0.0), retrieval_key(m))
    return validation_fn(False, top_k), lambda m: (retrieval_key(m),)


def _point(
    phase: int | str, stage: str, cfg: TrainConfig, metrics: dict, results: list[StageResult], searched: list[str]
) -> dict:
    """One grid point. `searched` names the learning rates the point is chosen among;
    the other one is held at a fixed value (in a phase-wise search, the configured one,
    which a phase that trains one side does not use)."""
    cost = sum((r.cost for r in results), Cost(name=stage))
    return {
        "phase": phase,
        "stage": stage,
        "lr_generator": cfg.lr_generator,
        "lr_retriever": cfg.lr_retriever,
        "searched": searched,
        **metrics,
        "stage_runs": len(results),
        "wall_s": cost.wall_s,
        "flops": cost.flops,
        "cost": cost.to_dict(),
    }


def _phase_wise(strategy, rag, train, val, cfg, lrs_g, lrs_r, top_k, on_point):
    points, final = [], []
    sides = strategy.trains
    for i, phase in enumerate(strategy.phases):
        (side,) = phase.stage.trains
        key = f"lr_{side}"
        start = get_state(rag, sides)
        fn, rank = _evaluator(strategy, phase.stage, top_k)
        best, ranks = None, []
        for lr in lrs_g if side == "generator" else lrs_r:
            set_state(rag, start)
            rag.sync_store()
            pcfg = phase.config(cfg, retriever_lora=rag.retriever.is_lora).set(**{key: lr})
            # a phase that keeps its best validated step (TrainConfig.keep_best) validates on the search's questions
            kept = {"val": val, "evaluate_fn": fn} if pcfg.keep_best else {}
            res = train_stage(phase.stage, rag, train, pcfg, **kept)
            rag.sync_store()
            metrics = fn(rag, val)
            point = _point(i, phase.name, pcfg, metrics, [res], [key])
            points.append(point)
            on_point(point)
            ranks.append(rank(metrics))
            if best is None or rank(metrics) > rank(best[0]):
                best = (metrics, get_state(rag, sides), res, point)
        set_state(rag, best[1])
        rag.sync_store()
        best[3]["chosen"] = [key]
        best[3]["ties"] = ranks.count(rank(best[0]))
        final.append(best[2])
    return points, final


def _grid(strategy, rag, train, val, cfg, lrs_g, lrs_r, top_k, on_point):
    start = get_state(rag, strategy.trains)
    # judged as the last phase that trains the generator answers (its rate is chosen here too), by
    # retrieval alone when no phase trains the generator
    gen = [p.stage for p in strategy.phases if "generator" in p.stage.trains]
    fn, rank = _evaluator(strategy, (gen or [strategy.phases[-1].stage])[-1], top_k)
    points, best, ranks = [], None, []
    for g, r in itertools.product(lrs_g, lrs_r):
        set_state(rag, start)
        rag.sync_store()
        pcfg = cfg.set(lr_generator=g, lr_retriever=r)
        results = strategy.run(rag, train, pcfg)
        metrics = fn(rag, val)
        point = _point("all", strategy.name, pcfg, metrics, results, ["lr_generator", "lr_retriever"])
        points.append(point)
        on_point(point)
        ranks.append(rank(metrics))
        if best is None or rank(metrics) > rank(best[0]):
            best = (metrics, get_state(rag, strategy.trains), results, point)
    set_state(rag, best[1])
    rag.sync_store()
    best[3]["chosen"] = ["lr_generator", "lr_retriever"]
    best[3]["ties"] = ranks.count(rank(best[0]))
    return points, best[2]
