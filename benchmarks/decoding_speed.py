"""Decoding time per question: concat vs RAG-Sequence vs RAG-Token at the same k.

    python benchmarks/decoding_speed.py [--k 3,5] [--questions 16] [--max-new-tokens 16]

Bundled MiniLM + SmolLM2-135M on the demo data. Goal: RAG-Token ≤ k × concat (it runs
one batched forward of k rows per step, with a KV cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", default="3,5")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    import tempfile

    from fedrag.data import demo, load_qa
    from fedrag.generate.decoding import GenerationSettings
    from fedrag.pipeline import build_rag
    from fedrag.rag import RAGSystem

    data = Path(tempfile.mkdtemp())
    demo.write(data)
    questions = [e.question for e in load_qa(data / "test.jsonl", limit=args.questions)]
    base = build_rag(str(data / "corpus.jsonl"), "minilm", "smollm2-135m")
    rows = []
    for k in [int(x) for x in args.k.split(",")]:
        hits = base.retrieve(questions, k)
        times = {}
        for dec in ("concat", "rag-sequence", "rag-token"):
            rag = RAGSystem(base.searcher, base.generator, top_k=k,
                            settings=GenerationSettings(dec, max_new_tokens=args.max_new_tokens))
            rag.decode(questions[:2], hits[:2], args.batch_size)  # warm-up
            t0 = time.perf_counter()
            rag.decode(questions, hits, args.batch_size)
            times[dec] = (time.perf_counter() - t0) / len(questions)
        rows.append([k, 1000 * times["concat"], 1000 * times["rag-sequence"], 1000 * times["rag-token"],
                     times["rag-sequence"] / times["concat"], times["rag-token"] / times["concat"]])
        print(rows[-1], flush=True)
    print(f"\nDecoding, SmolLM2-135M, {len(questions)} demo questions, ≤{args.max_new_tokens} new tokens, batch {args.batch_size}\n")
    print(table(["k", "concat ms/q", "rag-sequence ms/q", "rag-token ms/q", "rag-sequence / concat", "rag-token / concat"], rows))


if __name__ == "__main__":
    main()
