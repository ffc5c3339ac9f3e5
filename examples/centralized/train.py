"""Centralized fine-tuning from Python: load data, build the RAG system, train a strategy,
save it, and evaluate it with the decoding that matches its training.

    python examples/centralized/train.py --data data/demo --strategy ra-dit --steps 40 --out runs/example

(``fedrag demo-data --out data/demo`` writes a dataset in the expected layout.)
"""

import argparse
import json

import fedrag
from fedrag import GenerationSettings, RAGSystem, TrainConfig, build_training_rag, evaluate, load_qa, make_strategy, save_outputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a directory with corpus.jsonl, train.jsonl and test.jsonl")
    ap.add_argument("--strategy", default="ra-dit")
    ap.add_argument("--retriever", default="minilm")
    ap.add_argument("--generator", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--test-limit", type=int, default=40)
    ap.add_argument("--out", default="runs/example-centralized")
    args = ap.parse_args()
    fedrag.apply_defaults()  # offline Hugging Face, quiet libraries: what the CLI does for you

    rag = build_training_rag(f"{args.data}/corpus.jsonl", args.retriever, args.generator, top_k=3)
    plan = make_strategy(args.strategy, top_k=3)
    results = plan.run(rag, load_qa(f"{args.data}/train.jsonl"), TrainConfig(steps=args.steps, lr_generator=1e-3))
    save_outputs(rag, args.out, results, plan.name, plan=plan)  # DIR/retriever, DIR/generator, cost.json

    settings = GenerationSettings(plan.decoding["decoding"], gamma=plan.decoding["gamma"])
    metrics = evaluate(
        RAGSystem(rag.searcher, rag.generator, top_k=3, settings=settings),
        load_qa(f"{args.data}/test.jsonl", limit=args.test_limit),
        progress=False,
    )
    metrics.pop("_rows")
    print(
        json.dumps(
            {
                "strategy": plan.name,
                "decoding": settings.decoding,
                **{k: round(v, 4) for k, v in metrics.items() if k in ("em", "f1", "recall@5")},
            }
        )
    )


if __name__ == "__main__":
    main()
