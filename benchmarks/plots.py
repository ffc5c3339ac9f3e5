"""The figures of docs/results.md, drawn from the benchmarks' JSON (never by hand):

    python benchmarks/plots.py --compare hotpotqa=runs/cmp/hotpot/compare.json \
        --by-round runs/fbr/by_round.json --out docs/img

* ``--compare NAME=PATH`` (repeatable): a `fedrag compare` result -> quality_vs_cost_NAME.png
* ``--by-round PATH``: benchmarks/fed_by_round.py's result -> fed_vs_central_by_round.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedrag.strategies.report import plot_quality_vs_cost


def plot_by_round(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    steps = [0, *result["steps"]]
    start = result["untuned_recall@5"]
    ax.plot(steps, [start, *result["centralized_recall@5"]], marker="o", label="centralized")
    ax.plot(
        steps,
        [start, *result["federated_recall@5"]],
        marker="s",
        label=f"federated, {result['sites']} sites (one round = {result['local_steps']} local steps)",
    )
    ax.set_xlabel("sequential optimizer steps")
    ax.set_ylabel("held-out Recall@5")
    where = f"{result['dataset']}, n = {result['test_questions']} held-out questions\n" if "dataset" in result else ""
    ax.set_title(f"{where}{result['stage']}: federated vs centralized", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", action="append", default=[], help="NAME=PATH of a compare.json")
    ap.add_argument("--by-round", help="by_round.json of benchmarks/fed_by_round.py")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.compare:
        name, _, path = spec.partition("=")
        result = json.loads(Path(path).read_text())
        print(plot_quality_vs_cost(result, out / f"quality_vs_cost_{name}.png", f"{name}: quality vs cost"))
    if args.by_round:
        print(plot_by_round(json.loads(Path(args.by_round).read_text()), out / "fed_vs_central_by_round.png"))


if __name__ == "__main__":
    main()
