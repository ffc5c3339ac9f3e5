"""Retriever LoRA against full query-encoder training, side by side: the contrastive stage
(query side, MiniLM) with the same steps and batch, each at its own learning rate, scored by
held-out Recall@5; plus the bytes one federated round would move per site each way.

    python benchmarks/retriever_lora.py --data demo=data/demo --data hotpotqa=runs/val/hotpot [--steps 40]

Each DIR holds corpus.jsonl, train.jsonl and test.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def fedrag(*args) -> None:
    subprocess.run(
        [sys.executable, "-m", "fedrag", *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def recall(data: Path, retriever: str, out: Path) -> float:
    fedrag(
        "eval",
        "--corpus",
        data / "corpus.jsonl",
        "--test",
        data / "test.jsonl",
        "--retriever",
        retriever,
        "--generator",
        "none",
        "--metrics",
        out,
    )
    return json.loads(out.read_text())["recall@5"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--out", default="runs/retriever_lora")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr-full", default="5e-5")
    ap.add_argument("--lr-lora", default="1e-3")
    args = ap.parse_args()
    from fedrag.retrieve import Retriever

    full = Retriever.load("minilm")
    full_bytes = sum(p.numel() * 4 for p in full.trainable_parameters().values())
    full.add_lora()
    lora_bytes = sum(p.numel() * 4 for p in full.trainable_parameters().values())
    rows, results = [], {}
    for spec in args.data:
        name, _, d = spec.partition("=")
        data, out = Path(d), Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        base = recall(data, "minilm", out / "base.json")
        res = {"untuned": base}
        for kind, lr, extra in (("full", args.lr_full, []), ("lora", args.lr_lora, ["--retriever-lora"])):
            fedrag(
                "train",
                "--stage",
                "contrastive",
                "--query-only",
                "--corpus",
                data / "corpus.jsonl",
                "--train",
                data / "train.jsonl",
                "--generator",
                "none",
                "--steps",
                args.steps,
                "--batch-size",
                args.batch_size,
                "--lr-retriever",
                lr,
                *extra,
                "--out",
                out / kind,
                "--overwrite",
            )
            res[kind] = recall(data, str(out / kind / "retriever"), out / f"{kind}.json")
        results[name] = res
        rows.append([name, base, res["full"], res["lora"], res["lora"] - res["full"]])
    (Path(args.out) / "results.json").write_text(
        json.dumps({"steps": args.steps, "lr_full": args.lr_full, "lr_lora": args.lr_lora, "results": results}, indent=2)
    )
    print(
        f"bytes per site each way per federated round: full query encoder {full_bytes / 1e6:.1f} MB, "
        f"LoRA adapter {lora_bytes / 1e6:.2f} MB (tensor payload)"
    )
    print(table(["data", "untuned R@5", f"full (lr {args.lr_full}) R@5", f"LoRA (lr {args.lr_lora}) R@5", "LoRA - full"], rows))


if __name__ == "__main__":
    main()
