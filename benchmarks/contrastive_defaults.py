"""Which contrastive-stage settings raise Recall@5 on data they were not tuned on?

    python benchmarks/contrastive_defaults.py --hotpot ../shared/data/hotpotqa_dev_first100/hotpot_dev_distractor_first100.json
    python benchmarks/contrastive_defaults.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json --configs default

HotpotQA 100 (distractor setting): corpus = every context paragraph, questions split
in half (first 50 train, last 50 test); a question's gold = both supporting titles.
SQuAD: the article split every SQuAD benchmark uses. Each configuration trains the
bundled MiniLM from scratch for one epoch; Recall@5 is paired per question against
the untuned retriever (gained / lost, exact sign test).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import squad_split, table  # noqa: E402
from fedrag.evaluate.metrics import sign_test  # noqa: E402

CONFIGS = {  # name -> (ContrastiveStage options, TrainConfig options)
    "old-default": ({"hard_negatives": 1, "train_passages": False}, {"batch_size": 4}),
    "default": ({}, {}),
    "b16-query": ({"hard_negatives": 1, "train_passages": False}, {"batch_size": 16}),
    "b16-query-passages": ({"hard_negatives": 1, "train_passages": True}, {"batch_size": 16}),
    "b16-query-passages-hn3": ({"hard_negatives": 3, "train_passages": True}, {"batch_size": 16}),
    "b8-query-passages-2ep": ({"hard_negatives": 1, "train_passages": True}, {"batch_size": 8, "epochs": 2.0}),
    "b8-query-3ep": ({"hard_negatives": 1, "train_passages": False}, {"batch_size": 8, "epochs": 3.0}),
    "b8-query-passages-3ep": ({"hard_negatives": 1, "train_passages": True}, {"batch_size": 8, "epochs": 3.0}),
    "b8-query-passages-3ep-lr5e-5": (
        {"hard_negatives": 1, "train_passages": True},
        {"batch_size": 8, "epochs": 3.0, "lr_retriever": 5e-5},
    ),
}


def hotpot_split(path: str, out: Path):
    from fedrag.data import converters, write_jsonl

    passages, examples = converters.hotpotqa(path)
    half = len(examples) // 2
    corpus = out / "corpus.jsonl"
    write_jsonl(corpus, passages)
    return passages, examples[:half], examples[half:], str(corpus)


def recall_rows(rag, test, k: int = 5) -> list[float]:
    from fedrag.evaluate import evaluate
    from fedrag.rag import RAGSystem

    m = evaluate(RAGSystem(rag.searcher, None, top_k=k), test, progress=False, ks=(k,))
    return [r[f"recall@{k}"] for r in m["_rows"]]


def paired_row(label: str, hits: list[float], base: list[float], steps: int, wall: float) -> list:
    """A table row: Recall@5, questions gained / lost against `base`, the sign test's p, steps, seconds."""
    gained = sum(h > b for h, b in zip(hits, base))
    lost = sum(h < b for h, b in zip(hits, base))
    return [label, f"{sum(hits) / len(hits):.3f}", f"+{gained} / -{lost}", f"{sign_test(gained, lost):.2g}", steps, round(wall)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hotpot")
    ap.add_argument("--squad")
    ap.add_argument("--out", default="runs/contrastive_defaults")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names (or 'default')")
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    from fedrag.pipeline import build_training_rag
    from fedrag.train import ContrastiveStage, TrainConfig, train_stage

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.hotpot:
        passages, train, test, corpus = hotpot_split(args.hotpot, out)
        data = "HotpotQA 100 (50 train / 50 test)"
    elif args.squad:
        passages, train, test, corpus = squad_split(args.squad, out)
        data = "SQuAD v1.1 dev, split by article"
    else:
        raise SystemExit("give --hotpot or --squad")
    test = test[: args.test_limit] if args.test_limit else test
    print(f"{data}: {len(passages)} passages, {len(train)} train / {len(test)} test questions", flush=True)
    base_rag = build_training_rag(corpus, "minilm", "none")
    base = recall_rows(base_rag, test)
    rows = [["untuned", f"{sum(base) / len(base):.3f}", "-", "-", 0, 0]]
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        stage_opts, cfg_opts = CONFIGS[name]
        stage = ContrastiveStage(**stage_opts)
        rag = build_training_rag(corpus, "minilm", "none", shared_retriever=stage.train_passages)
        cfg = TrainConfig(**{"epochs": args.epochs, **cfg_opts})
        t0 = time.perf_counter()
        res = train_stage(stage, rag, train, cfg)
        if stage.train_passages:
            rag.reencode_store()
        wall = time.perf_counter() - t0
        shown = f"{name} [{stage.hard_negatives} hn, b{cfg.batch_size}, {'q+p' if stage.train_passages else 'q'}]"
        rows.append(paired_row(shown, recall_rows(rag, test), base, res.steps, wall))
        print(rows[-1], flush=True)
    print(f"\nContrastive stage, {data}, Recall@5 on the test questions (gold: every supporting passage)\n")
    print(
        table(
            ["configuration", "Recall@5", "gained / lost vs untuned", "sign-test p", "steps", "train s (incl. re-encode)"], rows
        )
    )


if __name__ == "__main__":
    main()
