"""2-site federated run vs centralized run of the same strategy on the demo data.

    python benchmarks/federated_vs_central.py --central runs/strategies [--strategies ra-dit,two-phase]

The centralized runs come from ``benchmarks/demo_strategies.py`` (``--steps`` per phase,
batch 4) on the whole training set; the federated run splits the same training set over
2 sites (IID), and each site runs ``--rounds`` x steps/rounds local steps per phase, so the
global model takes as many *sequential* steps as the centralized one (FedAvg averages the
sites' parallel progress; it does not add it). The sites together process twice the
examples; wall time is the same order since they train in parallel. Both runs are
evaluated on the same test questions.
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
    ap.add_argument("--central", default="runs/strategies")
    ap.add_argument("--out", default="runs/federated")
    ap.add_argument("--strategies", default="ra-dit,two-phase")
    ap.add_argument("--steps", type=int, default=40, help="centralized steps per phase (as in the central run)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--test-limit", type=int, default=60)
    args = ap.parse_args()
    central = {r["strategy"]: r for r in json.loads((Path(args.central) / "results.json").read_text())}
    data = Path(args.central) / "data"
    rows = []
    for name in args.strategies.split(","):
        run = Path(args.out) / name
        t0 = time.perf_counter()
        fedrag("federate", "--strategy", name, "--sites", "2", "--rounds", str(args.rounds),
               "--local-steps", str(args.steps // args.rounds), "--batch-size", "4", "--partition", "iid",
               "--corpus", str(data / "corpus.jsonl"), "--train", str(data / "train.jsonl"),
               "--lr-generator", "1e-3", "--lr-retriever", "5e-5", "--out", str(run))
        wall = time.perf_counter() - t0
        fedrag("eval", "--corpus", str(data / "corpus.jsonl"), "--qa", str(data / "test.jsonl"), "--retriever",
               str(run / "retriever"), "--generator", str(run / "generator"), "--limit", str(args.test_limit),
               "--output", str(run / "eval.json"))
        m = json.loads((run / "eval.json").read_text())
        cost = json.loads((run / "cost.json").read_text())
        c = central[name]
        rows.append([name, "centralized", c["em"], c["f1"], c["recall@5"], c["cli_s"], "-"])
        rows.append([name, "2 sites", m["em"], m["f1"], m["recall@5"], wall, f"{(cost['bytes_sent'] + cost['bytes_received']) / 1e6:.1f} MB"])
        rows.append([name, "difference (points)", 100 * (m["em"] - c["em"]), 100 * (m["f1"] - c["f1"]),
                     100 * (m["recall@5"] - c["recall@5"]), "", ""])
        print(rows[-2], flush=True)
    print(table(["strategy", "run", "EM", "F1", "Recall@5", "wall s (CLI)", "bytes on the wire"], rows))


if __name__ == "__main__":
    main()
