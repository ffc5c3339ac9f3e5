"""Does the RAG loss move Recall@5, and at which retriever learning rate?

    python benchmarks/rag_retriever_lr.py --hotpot ../shared/data/hotpotqa_dev_first100/hotpot_dev_distractor_first100.json

The retriever side of the joint RAG-Sequence stage alone (the bundled SmolLM2 frozen, so
the generator is the same teacher in every row): the bundled MiniLM trained on the first
50 HotpotQA questions for `--epochs`, Recall@5 on the last 50 paired per question against
the untuned retriever (gained / lost, exact sign test), as in contrastive_defaults.py.
A configuration is `LR@K`: the retriever learning rate and the passages per question the
loss marginalises over (the stage's `top_k`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402
from contrastive_defaults import hotpot_split, paired_row, recall_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hotpot", required=True)
    ap.add_argument("--out", default="runs/rag_retriever_lr")
    ap.add_argument("--configs", default="2e-5@4,2e-4@4,1e-3@4,2e-4@8", help="comma-separated LR@K")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    from fedrag.pipeline import build_training_rag
    from fedrag.train import RAGSequenceStage, TrainConfig, train_stage

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    passages, train, test, corpus = hotpot_split(args.hotpot, out)
    print(f"HotpotQA 100: {len(passages)} passages, {len(train)} train / {len(test)} test questions", flush=True)
    rag = build_training_rag(corpus, "minilm", "smollm2-135m")
    base = recall_rows(rag, test)
    rows = [["untuned", f"{sum(base) / len(base):.3f}", "-", "-", 0, 0]]
    for conf in [c.strip() for c in args.configs.split(",") if c.strip()]:
        lr, k = conf.split("@")
        rag = build_training_rag(corpus, "minilm", "smollm2-135m")
        stage = RAGSequenceStage(top_k=int(k), train_generator=False)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr_retriever=float(lr))
        t0 = time.perf_counter()
        res = train_stage(stage, rag, train, cfg)
        wall = time.perf_counter() - t0
        rows.append(paired_row(f"lr {lr}, k {k}", recall_rows(rag, test), base, res.steps, wall))
        print(rows[-1], flush=True)
    print(
        f"\nRAG-Sequence stage, retriever only (generator frozen), HotpotQA 100, {args.epochs:g} epochs, batch {args.batch_size}\n"
    )
    print(table(["configuration", "Recall@5", "gained / lost vs untuned", "sign-test p", "steps", "train s"], rows))


if __name__ == "__main__":
    main()
