"""What the phase-aware learning-rate search saves: two-phase searched phase by phase
against the same grid searched the naive way (the whole strategy retrained per point).

    python benchmarks/lr_search_cost.py [--strategy two-phase] [--steps 5] [--grid 3]

Bundled MiniLM + SmolLM2-135M on the demo data; validation = 20 test questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


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
    for mode in ("phase-wise", "full-retrain"):
        rag = build_training_rag(str(data / "corpus.jsonl"), "minilm", "smollm2-135m")
        report = search_lr(make_strategy(args.strategy), rag, train, val, cfg, lrs_g, lrs_r, mode=mode)
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
