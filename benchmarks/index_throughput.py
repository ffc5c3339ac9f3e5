"""Index build throughput vs plain ``SentenceTransformer.encode``, and query latency.

    python benchmarks/index_throughput.py [--squad ../shared/data/squad_v1.1_dev/dev-v1.1.json] [--limit 600]

Both sides encode the same passages with the same model and batch size, alternately,
three times; fedrag's side is ``KnowledgeStore.build`` with the embedding cache off
(encoding + FAISS index), so the ratio shows what the store adds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_corpus_arg, table, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--squad", default=None)
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from fedrag.models import retriever_path
    from fedrag.retrieve import KnowledgeStore, Retriever

    passages, examples = load_corpus_arg(args.squad, args.limit)
    texts = [p.as_text() for p in passages]
    plain = SentenceTransformer(retriever_path("minilm"), device="cpu")
    retriever = Retriever.load("minilm")
    torch.set_num_threads(torch.get_num_threads())
    t_plain, t_ours = [], []
    for _ in range(args.repeats):  # alternate so that machine noise hits both sides alike
        t_plain.append(timed(lambda: plain.encode(texts, batch_size=64, normalize_embeddings=True), 1)[0])
        t_ours.append(timed(lambda: KnowledgeStore.build(passages, retriever, use_cache=False), 1)[0])
    tp, to = float(np.median(t_plain)), float(np.median(t_ours))
    store = KnowledgeStore.build(passages, retriever, use_cache=False)
    questions = [e.question for e in examples[:200]]
    single, _ = timed(lambda: [store.search(retriever.encode_queries([q]), 5) for q in questions[:50]], 3)
    batched, _ = timed(lambda: store.search(retriever.encode_queries(questions), 5), 3)
    cached, _ = timed(lambda: KnowledgeStore.build(passages, retriever), 1)  # warm the cache
    cached, _ = timed(lambda: KnowledgeStore.build(passages, retriever), 3)
    rows = [
        ["plain SentenceTransformer.encode", len(texts), tp, len(texts) / tp, 1.0],
        ["fedrag KnowledgeStore.build (no cache)", len(texts), to, len(texts) / to, tp / to],
        ["fedrag KnowledgeStore.build (cached embeddings)", len(texts), cached, len(texts) / cached, tp / cached],
    ]
    print(table(["what", "passages", "seconds (median)", "passages/s", "throughput ratio vs plain"], rows))
    print()
    print(
        table(
            ["query latency", "ms per query"],
            [
                ["one query at a time (encode + FAISS top-5)", 1000 * single / 50],
                [f"batch of {len(questions)} (encode + FAISS top-5)", 1000 * batched / len(questions)],
            ],
        )
    )


if __name__ == "__main__":
    main()
