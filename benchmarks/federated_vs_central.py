"""2-site federated run vs centralized run of the same strategy, side by side, on the demo data.

    python benchmarks/federated_vs_central.py [--strategies ra-dit,two-phase] [--lr-retriever 2e-5]

For each strategy, one run trains centrally (``fedrag train``: ``--steps`` per phase,
batch 4, the whole training set) and one federates it (``fedrag federate``: the same
training set split over 2 sites, IID; each site runs ``--rounds`` x steps/rounds local
steps per phase), so the global model takes as many *sequential* steps as the centralized
one (FedAvg averages the sites' parallel progress; it does not add it). Both use the same
learning rates and are evaluated on the same test questions.
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


def fedrag(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fedrag", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/fed_vs_central")
    ap.add_argument("--strategies", default="ra-dit,two-phase")
    ap.add_argument("--steps", type=int, default=40, help="centralized steps per phase")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lr-generator", default="1e-3")
    ap.add_argument("--lr-retriever", default="2e-5")
    ap.add_argument("--test-limit", type=int, default=60)
    ap.add_argument("--extra", default="", help="extra `fedrag federate` options, e.g. '--keep-optimizer'")
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "train.jsonl").exists():
        fedrag("demo-data", "--out", str(data))
    common = [
        "--corpus",
        str(data / "corpus.jsonl"),
        "--train",
        str(data / "train.jsonl"),
        "--batch-size",
        "4",
        "--lr-generator",
        args.lr_generator,
        "--lr-retriever",
        args.lr_retriever,
    ]

    def evaluate(run: Path) -> dict:
        fedrag(
            "eval",
            "--corpus",
            str(data / "corpus.jsonl"),
            "--test",
            str(data / "test.jsonl"),
            "--retriever",
            str(run / "retriever"),
            "--generator",
            str(run / "generator"),
            "--test-limit",
            str(args.test_limit),
            "--metrics",
            str(run / "eval.json"),
        )
        return json.loads((run / "eval.json").read_text())

    rows, results = [], {}
    for name in args.strategies.split(","):
        run_c, run_f = out / name / "central", out / name / "federated"
        t0 = time.perf_counter()
        fedrag("train", "--strategy", name, "--steps", str(args.steps), "--out", str(run_c), *common)
        wall_c = time.perf_counter() - t0
        c = evaluate(run_c)
        t0 = time.perf_counter()
        fedrag(
            "federate",
            "--strategy",
            name,
            "--sites",
            "2",
            "--rounds",
            str(args.rounds),
            "--local-steps",
            str(args.steps // args.rounds),
            "--partition",
            "iid",
            "--out",
            str(run_f),
            *common,
            *args.extra.split(),
        )
        wall_f = time.perf_counter() - t0
        f = evaluate(run_f)
        cost = json.loads((run_f / "cost.json").read_text())
        wire = (cost["bytes_sent"] + cost["bytes_received"]) / 1e6
        rows.append([name, "centralized", c["em"], c["f1"], c["recall@1"], c["recall@5"], wall_c, "-"])
        rows.append([name, "2 sites", f["em"], f["f1"], f["recall@1"], f["recall@5"], wall_f, f"{wire:.1f} MB"])
        rows.append(
            [
                name,
                "difference (points)",
                100 * (f["em"] - c["em"]),
                100 * (f["f1"] - c["f1"]),
                100 * (f["recall@1"] - c["recall@1"]),
                100 * (f["recall@5"] - c["recall@5"]),
                "",
                "",
            ]
        )
        results[name] = {"central": c, "federated": f, "central_wall_s": wall_c, "federated_wall_s": wall_f, "wire_mb": wire}
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(rows[-3], rows[-2], flush=True)
    print(table(["strategy", "run", "EM", "F1", "Recall@1", "Recall@5", "wall s (CLI)", "bytes on the wire"], rows))
    print(
        f"\n{args.steps} steps/phase, batch 4, lr-generator {args.lr_generator}, lr-retriever {args.lr_retriever}, "
        f"2 sites x {args.rounds} rounds, {args.test_limit} test questions"
    )


if __name__ == "__main__":
    main()
