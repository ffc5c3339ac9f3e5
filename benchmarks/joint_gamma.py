"""Does the retrieval temperature gamma of the joint stages matter?

p(z|x) = softmax(s(x, z) / gamma). The joint stages default to gamma = 1 (Lewis et al.
2020, whose DPR inner products span tens of units); MiniLM's cosine scores span about
0.1 between the top passages, so at gamma = 1 p(z|x) is nearly uniform and RAG-Token's
per-step mixture averages the passages' next-token distributions. This trains a joint
strategy from the same base models at each gamma (settings as `fedrag compare`'s), decodes
it at its own gamma and, for the first, at every other gamma too (the decoding's share of
the effect), and pairs each with the untuned pipeline's rows from a `compare` run:

    python benchmarks/joint_gamma.py --corpus runs/val/squad/corpus.jsonl --train runs/val/squad/train.jsonl \
        --test runs/val/squad/test.jsonl --limit 40 --test-limit 40 --epochs 2 --max-new-tokens 16 \
        --untuned runs/cmp/squad/strategies/untuned.rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import _common  # noqa: F401  (process defaults)

from fedrag.data import load_corpus, load_qa
from fedrag.data.partition import evenly_spaced
from fedrag.evaluate import evaluate, paired_sign_test
from fedrag.generate.decoding import GenerationSettings
from fedrag.pipeline import build_training_rag
from fedrag.rag import RAGSystem
from fedrag.strategies import custom
from fedrag.train import RAGSequenceStage, RAGTokenStage, TrainConfig
from fedrag.train.state import get_state, set_state


def main():
    ap = argparse.ArgumentParser()
    for name in ("--corpus", "--train", "--test", "--untuned"):
        ap.add_argument(name, required=True)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--test-limit", type=int, default=40)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--gammas", default="1.0,0.1")
    ap.add_argument("--loss", choices=["rag-token", "rag-sequence"], default="rag-token")
    ap.add_argument("--top-k", type=int, default=3)
    args = ap.parse_args()
    load_corpus(args.corpus)  # fail early on a bad path
    train = evenly_spaced(load_qa(args.train), args.limit)
    test = evenly_spaced(load_qa(args.test), args.test_limit)
    untuned = [json.loads(line) for line in open(args.untuned)]
    if [q["id"] for q in untuned] != [e.id for e in test]:
        raise SystemExit("--untuned rows are not the same test questions")
    gammas = [float(g) for g in args.gammas.split(",")]
    stage_cls = RAGTokenStage if args.loss == "rag-token" else RAGSequenceStage
    cfg = TrainConfig(epochs=args.epochs, progress=False)
    rows = []
    for i, g in enumerate(gammas):
        rag = build_training_rag(args.corpus, "minilm", "smollm2-135m", True, args.top_k, "cpu", 0)
        plan = custom(f"joint-{args.loss}", stage_cls(top_k=args.top_k, gamma=g))
        t0 = time.perf_counter()
        plan.run(rag, train, cfg)
        train_s = time.perf_counter() - t0
        trained = get_state(rag, plan.trains)
        for dg in ([g] + [x for x in gammas if x != g]) if i == 0 else [g]:
            set_state(rag, trained)
            settings = GenerationSettings(args.loss, gamma=dg, max_new_tokens=args.max_new_tokens)
            m = evaluate(RAGSystem(rag.searcher, rag.generator, top_k=args.top_k, settings=settings), test, progress=False)
            q = m.pop("_rows")
            em, f1 = (paired_sign_test([u[k] for u in untuned], [r[k] for r in q]) for k in ("em", "f1"))
            rows.append(
                [
                    g,
                    dg,
                    m["em"],
                    m["f1"],
                    m.get("recall@5", float("nan")),
                    f"+{em[0]}/-{em[1]} (p {em[2]:.2g})",
                    f"+{f1[0]}/-{f1[1]} (p {f1[2]:.2g})",
                    round(train_s),
                ]
            )
            print(rows[-1], flush=True)
    base_f1 = sum(u["f1"] for u in untuned) / len(untuned)
    print(f"\nuntuned F1 {base_f1:.3f} on {len(untuned)} questions; {args.loss}, {len(train)} training questions")
    print(
        _common.table(["train gamma", "decode gamma", "EM", "F1", "Recall@5", "EM vs untuned", "F1 vs untuned", "train s"], rows)
    )


if __name__ == "__main__":
    main()
