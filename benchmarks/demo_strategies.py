"""Every strategy on the built-in demo data with the bundled MiniLM + SmolLM2, via the CLI.

    python benchmarks/demo_strategies.py --out runs/strategies [--steps 40] [--test-limit 60]

Prints (and writes to OUT/table.md) strategy, EM, F1, Recall@5, train wall seconds, FLOPs,
against the untuned pipeline on the same test questions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

STRATEGIES = ["independent", "two-phase", "joint-sequence", "joint-token", "ra-dit"]


def fedrag(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fedrag", *args], check=True, stdout=subprocess.DEVNULL)


def evaluate(data: Path, out: Path, retriever: str, generator: str, limit: int, top_k: int) -> dict:
    fedrag(
        "eval",
        "--corpus",
        str(data / "corpus.jsonl"),
        "--test",
        str(data / "test.jsonl"),
        "--retriever",
        retriever,
        "--generator",
        generator,
        "--top-k",
        str(top_k),
        "--test-limit",
        str(limit),
        "--metrics",
        str(out),
    )
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/strategies")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per phase")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr-generator", default="1e-3")
    ap.add_argument("--lr-retriever", default="5e-5")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--test-limit", type=int, default=60)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    fedrag("demo-data", "--out", str(data))
    rows = [
        {
            "strategy": "untuned",
            **evaluate(data, out / "untuned.json", "minilm", "smollm2-135m", args.test_limit, args.top_k),
            "train_s": 0.0,
            "flops": 0.0,
        }
    ]
    for name in args.strategies.split(","):
        run = out / name
        t0 = time.perf_counter()
        fedrag(
            "train",
            "--strategy",
            name,
            "--corpus",
            str(data / "corpus.jsonl"),
            "--train",
            str(data / "train.jsonl"),
            "--out",
            str(run),
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--lr-generator",
            args.lr_generator,
            "--lr-retriever",
            args.lr_retriever,
            "--top-k",
            str(args.top_k),
        )
        wall = time.perf_counter() - t0
        cost = json.loads((run / "cost.json").read_text())["total"]
        m = evaluate(data, run / "eval.json", str(run / "retriever"), str(run / "generator"), args.test_limit, args.top_k)
        rows.append({"strategy": name, **m, "train_s": cost["wall_s"], "flops": cost["flops"], "cli_s": wall})
        print(f"{name}: em={m['em']:.3f} f1={m['f1']:.3f} r@5={m['recall@5']:.3f} train={cost['wall_s']:.0f}s", flush=True)
    lines = ["| strategy | EM | F1 | Recall@1 | Recall@5 | train wall s | FLOPs (est.) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['em']:.3f} | {r['f1']:.3f} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | "
            f"{r['train_s']:.0f} | {r['flops']:.2e} |"
        )
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(
        table + f"\n\n{args.steps} steps/phase, batch {args.batch_size}, top-k {args.top_k}, "
        f"lr-generator {args.lr_generator}, lr-retriever {args.lr_retriever}, "
        f"{rows[0]['n']} test questions.\n"
    )
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
