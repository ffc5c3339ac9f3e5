"""Learning-rate search: 1-D per model for independent/two-phase, 2-D for joint strategies."""

from __future__ import annotations

import itertools
from dataclasses import replace

from fedrag.train.cost import Cost
from fedrag.train.loop import TrainConfig

JOINT = ("joint-sequence", "joint-token")


def grid_points(strategy: str, lrs_generator: list[float], lrs_retriever: list[float]) -> list[tuple[str, float, float]]:
    """Points to try. Joint strategies: the full 2-D grid. Others: the generator LRs
    (retriever LR at its first value) and the retriever LRs (generator at its first
    value) — one axis per model, since their stages train separately."""
    if strategy in JOINT:
        return [("joint", g, r) for g, r in itertools.product(lrs_generator, lrs_retriever)]
    pts = [("generator", g, lrs_retriever[0]) for g in lrs_generator]
    pts += [("retriever", lrs_generator[0], r) for r in lrs_retriever[1:]] if len(lrs_retriever) > 1 else []
    return pts


def search(run_point, strategy: str, cfg: TrainConfig, lrs_generator: list[float], lrs_retriever: list[float],
           k: int = 5) -> dict:
    """``run_point(cfg) -> (val_metrics, Cost)`` trains fresh models at one point.

    The generator axis is chosen by validation F1, the retriever axis by Recall@k,
    joint points by F1 (Recall@k breaks ties). Every point is reported with its cost.
    """
    points, total = [], Cost(name="lr-search")
    for axis, g, r in grid_points(strategy, lrs_generator, lrs_retriever):
        metrics, cost = run_point(replace(cfg, lr_generator=g, lr_retriever=r))
        total = total.add(cost)
        points.append({"axis": axis, "lr_generator": g, "lr_retriever": r, **metrics, "wall_s": cost.wall_s, "flops": cost.flops})
    f1 = lambda p: (p.get("f1", 0.0), p.get(f"recall@{k}", 0.0))  # noqa: E731
    rec = lambda p: (p.get(f"recall@{k}", 0.0), p.get("f1", 0.0))  # noqa: E731
    if strategy in JOINT:
        best = max(points, key=f1)
        best_g, best_r = best["lr_generator"], best["lr_retriever"]
    else:
        best_g = max([p for p in points if p["lr_retriever"] == lrs_retriever[0]], key=f1)["lr_generator"]
        best_r = max([p for p in points if p["lr_generator"] == lrs_generator[0]], key=rec)["lr_retriever"]
    return {"strategy": strategy, "best": {"lr_generator": best_g, "lr_retriever": best_r}, "points": points,
            "total_cost": total.to_dict()}
