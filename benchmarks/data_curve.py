"""How much training data moves anything: one stage trained on N questions, for several N,
scored against the untuned system on the same held-out questions, as a user runs it
(`fedrag convert`, `fedrag train --stage S --train-limit N`, `fedrag eval --predictions`).

    python benchmarks/data_curve.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json

Two curves on SQuAD v1.1 dev split by article (convert --test-fraction 0.2): the retriever's
(`contrastive`, the retriever-only stage, scored by Recall@5 with `--generator none`) and the
generator's (`ralt`, the generator-only stage, scored by F1). Each point is paired with the
untuned system question by question: gained / lost (sign test p) and the 95% bootstrap
interval of the mean difference. Every command's output is kept in --out, so a second run
continues where the first stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FEDRAG = [sys.executable, "-m", "fedrag"]


def _run(args: list[str], done: Path) -> float:
    """Run `fedrag args` unless `done` exists; the wall seconds it took (0 when cached)."""
    if done.exists():
        return 0.0
    t0 = time.perf_counter()
    subprocess.run(FEDRAG + args, check=True)
    return time.perf_counter() - t0


def _rows(path: Path, key: str) -> dict:
    return {r["id"]: float(r[key]) for r in map(json.loads, path.read_text().splitlines())}


def _pair(base: dict, tuned: dict) -> tuple:
    from fedrag.evaluate.metrics import paired_sign_test
    from fedrag.evaluate.stats import paired_diff_ci

    ids = sorted(base)
    a, b = [base[i] for i in ids], [tuned[i] for i in ids]
    gained, lost, p = paired_sign_test(a, b)
    low, high = paired_diff_ci(a, b)
    return sum(b) / len(b), sum(b) / len(b) - sum(a) / len(a), low, high, gained, lost, p


def curve(data: Path, out: Path, stage: str, sizes: list[int], key: str, eval_args: list[str], train_args: list[str]):
    """Rows of one curve: the untuned system, then `stage` trained on each size."""
    corpus, test = str(data / "corpus.jsonl"), str(data / "test.jsonl")
    base = out / f"{stage}_untuned.jsonl"
    secs = _run(["eval", "--corpus", corpus, "--test", test, *eval_args, "--predictions", str(base)], base)
    untuned = _rows(base, key)
    rows = [[stage, 0, "untuned", round(sum(untuned.values()) / len(untuned), 3), "", "", "", "", secs]]
    for n in sizes:
        run, preds = out / f"{stage}_{n}", out / f"{stage}_{n}.jsonl"
        secs = _run(
            [
                "train",
                "--stage",
                stage,
                "--corpus",
                corpus,
                "--train",
                str(data / "train.jsonl"),
                "--train-limit",
                str(n),
                *train_args,
                "--out",
                str(run),
                "--overwrite",
            ],
            run / "cost.json",
        )
        pieces = ["--retriever", str(run / "retriever")] if stage == "contrastive" else ["--generator", str(run / "generator")]
        secs += _run(["eval", "--corpus", corpus, "--test", test, *eval_args, *pieces, "--predictions", str(preds)], preds)
        mean, diff, low, high, gained, lost, p = _pair(untuned, _rows(preds, key))
        steps = json.loads((run / "cost.json").read_text())["total"]["steps"]
        rows.append(
            [
                stage,
                n,
                steps,
                round(mean, 3),
                f"{diff:+.3f}",
                f"{low:+.3f} to {high:+.3f}",
                f"+{gained} / -{lost}",
                f"{p:.2g}",
                round(secs),
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--squad", required=True, help="SQuAD v1.1 JSON (dev-v1.1.json)")
    ap.add_argument("--out", default="runs/data_curve")
    ap.add_argument("--retriever-sizes", default="50,200,800")
    ap.add_argument("--generator-sizes", default="40,160")
    ap.add_argument("--retriever-test-limit", type=int, default=1000)
    ap.add_argument("--generator-test-limit", type=int, default=150)
    args = ap.parse_args()
    out, data = Path(args.out), Path(args.out) / "squad"
    out.mkdir(parents=True, exist_ok=True)
    _run(
        ["convert", "--format", "squad", "--input", args.squad, "--out", str(data), "--test-fraction", "0.2"], data / "test.jsonl"
    )
    sizes = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    rows = curve(
        data,
        out,
        "contrastive",
        sizes(args.retriever_sizes),
        "recall@5",
        ["--generator", "none", "--test-limit", str(args.retriever_test_limit)],
        [],
    )
    rows += curve(
        data,
        out,
        "ralt",
        sizes(args.generator_sizes),
        "f1",
        ["--test-limit", str(args.generator_test_limit), "--max-new-tokens", "16"],
        [],
    )
    from _common import table

    print(table(["stage", "train questions", "steps", "score", "diff", "95% CI", "gained / lost", "p", "wall s"], rows))
    print("score: Recall@5 (contrastive) or F1 (ralt) on the held-out questions; paired with the untuned system.")


if __name__ == "__main__":
    main()
