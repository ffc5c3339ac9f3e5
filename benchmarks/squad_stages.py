"""Retriever and generator stages on real data: SQuAD v1.1 dev, split by article.

    python benchmarks/squad_stages.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json --out runs/squad

Corpus = all 2,067 paragraphs; train/test questions come from disjoint articles. Each
stage starts from the untuned bundled models: contrastive and LSR are scored by test
Recall@5 (all test questions), RALT by EM/F1 on ``--gen-limit`` test questions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import squad_split, table  # noqa: E402

from fedrag.evaluate.metrics import sign_test  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--squad", required=True)
    ap.add_argument("--out", default="runs/squad")
    ap.add_argument("--retrieval-limit", type=int, default=1000, help="test questions for Recall@k")
    ap.add_argument("--gen-limit", type=int, default=100, help="test questions for EM/F1")
    ap.add_argument("--contrastive-steps", type=int, default=60)
    ap.add_argument("--lsr-steps", type=int, default=40)
    ap.add_argument("--ralt-steps", type=int, default=40)
    ap.add_argument("--stages", default="contrastive,lsr,ralt")
    ap.add_argument("--contrastive-batch", type=int, default=16)
    ap.add_argument("--lsr-batch", type=int, default=4)
    ap.add_argument("--lsr-k", type=int, default=4)
    ap.add_argument(
        "--lsr-tau", type=float, default=1.0, help="LSR's LM temperature τ (1e9: a uniform target, the no-teacher control)"
    )
    ap.add_argument("--lr-retriever", type=float, default=2e-5)
    ap.add_argument("--hard-negatives", type=int, default=1)
    ap.add_argument(
        "--train-passages", action="store_true", help="contrastive and lsr also train the passage encoder (store re-encoded)"
    )
    ap.add_argument(
        "--lsr-teacher",
        choices=("untuned", "ralt"),
        default="untuned",
        help="ralt: LSR scores with the generator the ralt stage just tuned (RA-DIT's order); needs ralt in --stages",
    )
    args = ap.parse_args()
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import build_training_rag
    from fedrag.rag import RAGSystem
    from fedrag.train import ContrastiveStage, LSRStage, RALTStage, TrainConfig, train_stage

    out = Path(args.out)
    passages, train, test, corpus = squad_split(args.squad, out)
    test_r, test_g = test[: args.retrieval_limit], test[: args.gen_limit]
    print(f"{len(passages)} passages, {len(train)} train / {len(test)} test questions (by article)", flush=True)

    def fresh(shared: bool = False):
        return build_training_rag(corpus, "minilm", "smollm2-135m", top_k=3, shared_retriever=shared)

    def recall(rag):
        m = evaluate(RAGSystem(rag.searcher, None, top_k=5), test_r, progress=False)
        return {k: m[k] for k in ("recall@1", "recall@5", "recall@20", "mrr@10")}, [r["recall@5"] for r in m["_rows"]]

    def answers(rag):
        m = evaluate(RAGSystem(rag.searcher, rag.generator, top_k=3), test_g, progress=False)
        return {k: m[k] for k in ("em", "f1")}, None

    t0 = time.perf_counter()
    rag = fresh()
    print(f"store built in {time.perf_counter() - t0:.0f}s", flush=True)
    base_r, base_hits = recall(rag)
    base_g = answers(rag)[0] if args.gen_limit else {"em": float("nan"), "f1": float("nan")}
    rows = [["untuned", "-", base_r["recall@5"], "-", base_r["mrr@10"], base_g["em"], base_g["f1"], 0.0]]
    print("baseline", base_r, base_g, flush=True)
    results = {"baseline": {**base_r, **base_g}}
    lr = args.lr_retriever
    stages = [
        (
            "contrastive",
            ContrastiveStage(hard_negatives=args.hard_negatives, train_passages=args.train_passages),
            TrainConfig(steps=args.contrastive_steps, batch_size=args.contrastive_batch, lr_retriever=lr),
            recall,
        ),
        (
            "lsr",
            LSRStage(top_k=args.lsr_k, tau=args.lsr_tau, train_passages=args.train_passages),
            TrainConfig(steps=args.lsr_steps, batch_size=args.lsr_batch, lr_retriever=lr),
            recall,
        ),
        ("ralt", RALTStage(top_k=3), TrainConfig(steps=args.ralt_steps, batch_size=4, lr_generator=1e-3), answers),
    ]
    tuned = None  # the RALT-tuned system, when LSR is to use it as its teacher
    if args.lsr_teacher == "ralt":
        if "ralt" not in args.stages.split(","):
            ap.error("--lsr-teacher ralt needs ralt in --stages")
        stages = [stages[0], stages[2], stages[1]]
    for name, stage, cfg, metric in stages:
        if name not in args.stages.split(","):
            continue
        shared = args.train_passages  # RALT's system too, when it becomes LSR's teacher
        rag = tuned if (name == "lsr" and tuned is not None) else fresh(shared)
        res = train_stage(stage, rag, train, cfg)
        if shared and name != "ralt":
            print("re-encoded the store:", rag.reencode_store(), flush=True)
        if name == "ralt" and args.lsr_teacher == "ralt":
            tuned = rag
        m, hits = metric(rag)
        if hits is not None:  # Recall@5 paired against the untuned retriever, question by question
            m["r5_gained"] = sum(h > b for h, b in zip(hits, base_hits))
            m["r5_lost"] = sum(h < b for h, b in zip(hits, base_hits))
            m["r5_sign_test_p"] = sign_test(m["r5_gained"], m["r5_lost"])
        if name == "lsr" and tuned is not None:
            name = "lsr (RALT-tuned teacher)"
        results[name] = {**m, "wall_s": res.cost.wall_s, "steps": res.cost.steps, "flops": res.cost.flops}
        row_r = m if "recall@5" in m else base_r
        row_g = m if "em" in m else (results["ralt"] if name.startswith("lsr (") else base_g)  # LSR kept RALT's generator
        paired = f"+{m['r5_gained']} / -{m['r5_lost']} (p={m['r5_sign_test_p']:.2g})" if "r5_gained" in m else "-"
        rows.append(
            [
                name,
                f"{cfg.steps} x {cfg.batch_size}",
                row_r["recall@5"],
                paired,
                row_r["mrr@10"],
                row_g["em"],
                row_g["f1"],
                res.cost.wall_s,
            ]
        )
        print(name, m, f"{res.cost.wall_s:.0f}s", flush=True)
    print()
    print(
        table(["stage", "steps x batch", "Recall@5", "R@5 gained / lost (sign test)", "MRR@10", "EM", "F1", "train wall s"], rows)
    )
    print(f"\nRecall on {len(test_r)} test questions, EM/F1 on {len(test_g)}; the untrained side keeps its baseline value.")
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
