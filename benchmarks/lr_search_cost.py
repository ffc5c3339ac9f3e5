"""What the phase-aware learning-rate search saves: two-phase searched phase by phase
against the same grid searched the naive way (the whole strategy retrained per point,
written out below: fedrag itself has no such mode).

    python benchmarks/lr_search_cost.py [--strategy two-phase] [--steps 5] [--grid 3]

Bundled MiniLM + SmolLM2-135M on the demo data; validation = 20 test questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def naive_search(strategy, rag, train, val, cfg, lrs_g, lrs_r) -> dict:
    """The old way: two 1-D searches (g + r - 1 points: the other rate at its grid's first
    value, the first point shared by both axes), each point retraining the whole strategy
    from the initial models. An axis is judged as the phase-wise search judges the phase
    that trains its side: F1 (EM breaks ties; default decoding) for the generator, Recall@5
    for the retriever.
    Search only (no final run); the report's fields as `search_lr`'s."""
    from fedrag.train import get_state, set_state
    from fedrag.train.cost import Cost
    from fedrag.train.validate import retrieval_key, validation_fn

    judges = {
        "lr_generator": (validation_fn(True), lambda m: (m.get("f1", 0.0), m.get("em", 0.0), retrieval_key(m))),
        "lr_retriever": (validation_fn(False), lambda m: (retrieval_key(m),)),
    }
    start = get_state(rag, strategy.trains)
    # each point with the axes it is judged on: the first is both axes' point
    axes = [("lr_generator", "lr_retriever")] + [("lr_generator",)] * (len(lrs_g) - 1) + [("lr_retriever",)] * (len(lrs_r) - 1)
    grid = [(g, lrs_r[0]) for g in lrs_g] + [(lrs_g[0], r) for r in lrs_r[1:]]
    points, best, runs, cost = [], {}, 0, Cost(name="naive")
    for (g, r), judged in zip(grid, axes):
        set_state(rag, start)
        rag.sync_store()
        results = strategy.run(rag, train, cfg.set(lr_generator=g, lr_retriever=r))
        points.append({"lr_generator": g, "lr_retriever": r})
        runs, cost = runs + len(results), sum((x.cost for x in results), cost)
        for axis in judged:
            fn, rank = judges[axis]
            key = rank(fn(rag, val))
            if axis not in best or key > best[axis][0]:
                best[axis] = (key, g if axis == "lr_generator" else r)
    return {
        "points": points,
        "stage_runs": runs,
        "search_cost": cost.to_dict(),
        "best": {axis: lr for axis, (_, lr) in best.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategy", default="two-phase")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--val", type=int, default=20)
    args = ap.parse_args()
    import tempfile

    from fedrag.data import demo, load_qa
    from fedrag.pipeline import build_training_rag
    from fedrag.strategies import make_strategy
    from fedrag.strategies.lr_search import search_lr
    from fedrag.train import TrainConfig

    data = Path(tempfile.mkdtemp())
    demo.write(data)
    train, val = load_qa(data / "train.jsonl"), load_qa(data / "test.jsonl", limit=args.val)
    lrs_g, lrs_r = [1e-4, 3e-4, 1e-3], [1e-5, 3e-5, 1e-4]
    cfg = TrainConfig(steps=args.steps, batch_size=4)
    rows = []
    for mode in ("phase-wise", "naive"):
        rag = build_training_rag(str(data / "corpus.jsonl"), "minilm", "smollm2-135m")
        search = search_lr if mode == "phase-wise" else naive_search
        report = search(make_strategy(args.strategy), rag, train, val, cfg, lrs_g, lrs_r)
        sc = report["search_cost"]
        rows.append(
            [
                mode,
                len(report["points"]),
                report["stage_runs"],
                sc["steps"],
                sc["wall_s"],
                sc["flops"],
                f"{report['best']['lr_generator']:g} / {report['best']['lr_retriever']:g}",
            ]
        )
        print(rows[-1], flush=True)
    rows.append(
        ["ratio naive / phase-wise", "", "", rows[1][3] / rows[0][3], rows[1][4] / rows[0][4], rows[1][5] / rows[0][5], ""]
    )
    print(f"\nLR search for {args.strategy}, grid {lrs_g} x {lrs_r}, {args.steps} steps per phase run, demo data\n")
    print(table(["search", "points", "stage runs", "optimizer steps", "wall s", "FLOPs", "chosen lr_g / lr_r"], rows))


if __name__ == "__main__":
    main()
