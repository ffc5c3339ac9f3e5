"""Answers that start with a list marker ("[4] ...", "1. ..."), before and after
`fedrag.generate.prompts.clean_answer`, from a `fedrag compare` run's stored predictions.

    python benchmarks/list_markers.py runs/cmp/squad150 --test runs/val/squad/test.jsonl

For each strategy: how many answers began with a marker, EM and F1 of the stored
answers and of the same answers cleaned, and the paired gained / lost questions (two-sided
sign test). No model runs: the predictions are the ones `compare` wrote (rows made before
the cleaning existed hold the raw answers; rows made after it hold cleaned ones, so the two
columns agree).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("compare_dir")
    ap.add_argument("--test", required=True, help="the test JSONL the comparison ran on")
    args = ap.parse_args()
    from fedrag.data import load_qa
    from fedrag.evaluate.metrics import exact_match, f1_score, sign_test
    from fedrag.generate.prompts import clean_answer

    gold = {e.id: e.answers for e in load_qa(args.test)}
    rows = []
    for path in sorted(Path(args.compare_dir, "strategies").glob("*.rows.jsonl")):
        preds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        raw = [(p["prediction"], gold[p["id"]]) for p in preds]
        marked = sum(clean_answer(a) != a.strip() for a, _ in raw)
        em0 = [exact_match(a, g) for a, g in raw]
        em1 = [exact_match(clean_answer(a), g) for a, g in raw]
        f0 = [f1_score(a, g) for a, g in raw]
        f1 = [f1_score(clean_answer(a), g) for a, g in raw]
        gained = sum(b > a for a, b in zip(em0, em1))
        lost = sum(b < a for a, b in zip(em0, em1))
        n = len(raw)
        rows.append(
            [
                path.name.removesuffix(".rows.jsonl"),
                n,
                marked,
                sum(em0) / n,
                sum(em1) / n,
                sum(f0) / n,
                sum(f1) / n,
                f"+{gained} / -{lost} (p {sign_test(gained, lost):.2g})",
            ]
        )
    print(table(["strategy", "n", "answers with a marker", "EM", "EM cleaned", "F1", "F1 cleaned", "EM gained / lost"], rows))


if __name__ == "__main__":
    main()
