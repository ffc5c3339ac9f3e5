"""Decoding time per question: concat, RAG-Sequence (thorough and fast) and RAG-Token at
the same k, and how often fast RAG-Sequence picks thorough's answer.

    python benchmarks/decoding_speed.py [--k 3,5] [--questions 16] [--max-new-tokens 16]
        [--corpus C.jsonl --qa Q.jsonl] [--generator DIR]

Bundled MiniLM + SmolLM2-135M on the demo data unless --corpus/--qa (e.g. a converted
SQuAD split) and --generator (e.g. a RAG-Sequence-trained generator) are given. Goals:
RAG-Token ≤ k × concat; fast RAG-Sequence close to concat and agreeing with thorough on
most questions.
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
    ap.add_argument("--corpus")
    ap.add_argument("--qa")
    ap.add_argument("--generator", default="smollm2-135m")
    args = ap.parse_args()
    import tempfile

    from fedrag.data import demo, load_qa
    from fedrag.data.partition import evenly_spaced
    from fedrag.evaluate.metrics import exact_match, f1_score
    from fedrag.generate.decoding import GenerationSettings
    from fedrag.pipeline import build_rag
    from fedrag.rag import RAGSystem

    if args.corpus and args.qa:
        corpus, qa, data_name = args.corpus, args.qa, Path(args.qa).name
    else:
        data = Path(tempfile.mkdtemp())
        demo.write(data)
        corpus, qa, data_name = str(data / "corpus.jsonl"), str(data / "test.jsonl"), "demo"
    examples = evenly_spaced(load_qa(qa), args.questions)
    questions = [e.question for e in examples]
    base = build_rag(corpus, "minilm", args.generator)
    rows = []
    kinds = {
        "concat": ("concat", "thorough"),
        "thorough": ("rag-sequence", "thorough"),
        "fast": ("rag-sequence", "fast"),
        "rag-token": ("rag-token", "thorough"),
    }
    for k in [int(x) for x in args.k.split(",")]:
        hits = base.retrieve(questions, k)
        times, answers = {}, {}
        for name, (dec, mode) in kinds.items():
            rag = RAGSystem(
                base.searcher,
                base.generator,
                top_k=k,
                settings=GenerationSettings(dec, max_new_tokens=args.max_new_tokens, rag_sequence=mode),
            )
            rag.decode(questions[:2], hits[:2], args.batch_size)  # warm-up
            t0 = time.perf_counter()
            answers[name] = rag.decode(questions, hits, args.batch_size)
            times[name] = (time.perf_counter() - t0) / len(questions)
        agree = sum(a == b for a, b in zip(answers["fast"], answers["thorough"]))

        def f1(name):
            return sum(f1_score(a, e.answers) for a, e in zip(answers[name], examples)) / len(examples)

        def em(name):
            return sum(exact_match(a, e.answers) for a, e in zip(answers[name], examples)) / len(examples)

        rows.append(
            [
                k,
                *(round(1000 * times[n]) for n in kinds),
                round(times["fast"] / times["concat"], 2),
                round(times["thorough"] / times["concat"], 2),
                f"{agree}/{len(questions)}",
                f"{em('thorough'):.3f} / {f1('thorough'):.3f}",
                f"{em('fast'):.3f} / {f1('fast'):.3f}",
            ]
        )
        print(rows[-1], flush=True)
    print(
        f"\nDecoding, {args.generator}, {len(questions)} questions of {data_name}, ≤{args.max_new_tokens} new tokens, "
        f"batch {args.batch_size}\n"
    )
    print(
        table(
            [
                "k",
                "concat ms/q",
                "rag-seq thorough ms/q",
                "rag-seq fast ms/q",
                "rag-token ms/q",
                "fast / concat",
                "thorough / concat",
                "fast = thorough",
                "thorough EM / F1",
                "fast EM / F1",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
