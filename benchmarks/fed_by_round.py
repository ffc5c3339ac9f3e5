"""Federated vs centralized, round by round: the contrastive retriever stage (MiniLM, at the
stage's defaults: query and passage side, one shared encoder) trained centrally and over 2 IID sites, both scored on the same held-out questions
after every R sequential steps (the centralized run's `--evaluate-every`, the server's
evaluation after each federated round). Writes OUT/by_round.json for benchmarks/plots.py.

    python benchmarks/fed_by_round.py --corpus C --train T --test Q [--rounds 4] [--local-steps 5]

HotpotQA 100 (first 50 train, last 50 test) is what docs/results.md reports; see
benchmarks/validate_defaults.sh for the split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def fedrag(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedrag", *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", default="runs/fed_by_round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr-retriever", default="5e-5")
    ap.add_argument("--dataset", default="HotpotQA 100", help="the data's name, for the plot's title")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [
        "--stage",
        "contrastive",
        "--corpus",
        args.corpus,
        "--train",
        args.train,
        "--generator",
        "none",
        "--batch-size",
        args.batch_size,
        "--lr-retriever",
        args.lr_retriever,
        "--overwrite",
    ]
    steps = args.rounds * args.local_steps
    central_s = fedrag(
        "train",
        *common,
        "--steps",
        steps,
        "--val",
        args.test,
        "--val-limit",
        1000,
        "--evaluate-every",
        args.local_steps,
        "--out",
        out / "central",
    )
    records = [json.loads(line) for line in (out / "central" / "phase0-contrastive" / "metrics.jsonl").read_text().splitlines()]
    central = {r["step"]: r["val_recall@5"] for r in records if "val_recall@5" in r}
    fed_s = fedrag(
        "federate",
        *common,
        "--sites",
        2,
        "--rounds",
        args.rounds,
        "--local-steps",
        args.local_steps,
        "--val",
        args.test,
        "--val-limit",
        1000,
        "--evaluate-every",
        0,
        "--out",
        out / "fed",
    )
    rounds = json.loads((out / "fed" / "rounds.json").read_text())
    fed = {r["round"] * args.local_steps: r["server_recall@5"] for r in rounds}
    fedrag("eval", "--corpus", args.corpus, "--test", args.test, "--generator", "none", "--metrics", out / "base.json")
    start = json.loads((out / "base.json").read_text())["recall@5"]
    n_test = sum(1 for line in Path(args.test).read_text().splitlines() if line.strip())
    result = {
        "stage": "contrastive (query and passage encoder)",
        "dataset": args.dataset,
        "test_questions": n_test,
        "sites": 2,
        "local_steps": args.local_steps,
        "batch_size": args.batch_size,
        "lr_retriever": float(args.lr_retriever),
        "untuned_recall@5": start,
        "steps": sorted(central),
        "centralized_recall@5": [central[s] for s in sorted(central)],
        "federated_recall@5": [fed.get(s) for s in sorted(central)],
        "central_s": central_s,
        "federated_s": fed_s,
    }
    (out / "by_round.json").write_text(json.dumps(result, indent=2))
    rows = [[s, central[s], fed.get(s, float("nan"))] for s in sorted(central)]
    print(f"untuned Recall@5 {start:.3f}; centralized {central_s:.0f}s, federated {fed_s:.0f}s (CLI wall)")
    print(table(["sequential steps", "centralized Recall@5", "federated Recall@5 (2 sites)"], rows))


if __name__ == "__main__":
    main()
