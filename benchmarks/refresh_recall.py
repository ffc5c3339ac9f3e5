"""What a stale store costs in Recall@5, and what re-ranking wins back (`--index-refresh`).

    python benchmarks/refresh_recall.py --data runs/data_curve/squad

The contrastive stage trains the shared encoder (query and passage side) on N questions;
the store was embedded by the untuned encoder. Then, on the same held-out questions, with
the same trained encoder: `phase` (the store re-embedded: exact), `rerank` (the stale
index's top 4k candidates re-ranked by passages embedded afresh: what a federated site
searches between refreshes) and no refresh at all (the stale index searched with the new
queries). Each is paired with `phase` question by question (gained / lost, sign test p).
`--data` is a `fedrag convert --test-fraction` directory (corpus, train, test JSONL).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (thread defaults)


def recall(rag, examples, k: int = 5) -> list[float]:
    from fedrag.evaluate import recall_at_k

    out = []
    for i in range(0, len(examples), 32):
        batch = examples[i : i + 32]
        hits = rag.retrieve([e.question for e in batch], k)
        out += [recall_at_k([h.passage.id for h in hs], e.gold_ids, k) for hs, e in zip(hits, batch)]
    return out


def main() -> None:
    from _common import table

    from fedrag.data import load_qa
    from fedrag.data.partition import evenly_spaced
    from fedrag.evaluate.metrics import paired_sign_test
    from fedrag.pipeline import build_training_rag
    from fedrag.strategies.base import Phase
    from fedrag.train import TrainConfig, make_stage, train_stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-limit", type=int, default=800)
    ap.add_argument("--test-limit", type=int, default=400)
    args = ap.parse_args()
    data = Path(args.data)
    train = evenly_spaced(load_qa(data / "train.jsonl"), args.train_limit)
    test = evenly_spaced(load_qa(data / "test.jsonl"), args.test_limit)
    rag = build_training_rag(str(data / "corpus.jsonl"), "minilm", None, top_k=5, shared_retriever=True, index_refresh="rerank")
    untuned = recall(rag, test)
    stage = make_stage("contrastive")
    t0 = time.perf_counter()
    train_stage(stage, rag, train, Phase(stage).config(TrainConfig()))
    train_s = time.perf_counter() - t0
    rows, scores, secs = [], {}, {}
    for mode in ("none", "rerank", "phase"):  # the store is re-embedded last: the first two see it stale
        t0 = time.perf_counter()
        if mode == "phase":
            rag.reencode_store()
        rag.searcher.stale = mode == "rerank"
        scores[mode], secs[mode] = recall(rag, test), time.perf_counter() - t0
    for mode, label in (
        ("untuned", "untuned encoder, its own store"),
        ("none", "stale store, no refresh"),
        ("rerank", "stale store, re-ranked (rerank)"),
        ("phase", "store re-embedded (phase)"),
    ):
        s = untuned if mode == "untuned" else scores[mode]
        gained, lost, p = paired_sign_test(scores["phase"], s) if mode != "phase" else (0, 0, 1.0)
        rows.append(
            [
                label,
                round(sum(s) / len(s), 3),
                f"+{gained} / -{lost}" if mode != "phase" else "-",
                f"{p:.2g}" if mode != "phase" else "-",
                round(secs.get(mode, 0.0), 1),
            ]
        )
    print(f"contrastive on {len(train)} training questions ({train_s:.0f} s); Recall@5 on {len(test)} held-out questions")
    print(table(["retrieval after training", "Recall@5", "vs phase: gained / lost", "p", "s (incl. re-embedding)"], rows))


if __name__ == "__main__":
    main()
