"""Replay a federated LSR phase without Flower, to separate LR, optimizer restarts and averaging.

    python benchmarks/lsr_replay.py --data runs/strategies/data --sites runs/federated/ra-dit/sites \
        --generator runs/federated/ra-dit/generator --mode fed --lr 2e-5 [--rounds 2] [--keep-optimizer]
    python benchmarks/lsr_replay.py ... --mode central --lr 5e-5 [--chunks 2]

``central``: 40 LSR steps on all of ``--data``/train.jsonl, in ``--chunks`` runs (each
restarts AdamW unless ``--keep-optimizer``). ``fed``: the client's round (``train_stage``
with its settings) on each site of ``--sites``, FedAvg by example count, for ``--rounds``
rounds of 40/rounds steps. Prints test Recall@1/5 (``--data``/test.jsonl against the full
corpus) and the L2 distance the query encoder moved.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--sites", required=True)
    ap.add_argument("--generator", required=True)
    ap.add_argument("--mode", choices=("central", "fed"), required=True)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep-optimizer", action="store_true")
    args = ap.parse_args()
    from fedrag._env import apply_defaults

    apply_defaults()
    from fedrag.data import load_corpus, load_qa
    from fedrag.evaluate import recall_at_k
    from fedrag.pipeline import build_training_rag
    from fedrag.retrieve import KnowledgeStore
    from fedrag.train import LSRStage, TrainConfig, get_state, set_state, train_stage
    from fedrag.train.optimizer import RoundWindow

    data, sites = Path(args.data), Path(args.sites)
    test, corpus = load_qa(data / "test.jsonl"), load_corpus(data / "corpus.jsonl")
    stage, total = LSRStage(top_k=3), 40

    def recall(rag) -> tuple[float, float]:
        store = KnowledgeStore.build(corpus, rag.retriever)
        _, pos = store.search(rag.retriever.encode_queries([e.question for e in test]), 5)
        ids = [[store.passages[p].id for p in row] for row in pos.tolist()]
        return tuple(sum(recall_at_k(r, e.gold_ids, k) for r, e in zip(ids, test)) / len(test) for k in (1, 5))

    def load(corpus_path):
        return build_training_rag(str(corpus_path), "minilm", args.generator, True, 3, "cpu", 0)

    t0 = time.perf_counter()
    if args.mode == "central":
        rag = load(data / "corpus.jsonl")
        base = get_state(rag, ("retriever",))
        moments, n = ({} if args.keep_optimizer else None), total // args.chunks
        for c in range(args.chunks):
            cfg = TrainConfig(steps=n, batch_size=4, lr_retriever=args.lr, seed=c)
            window = RoundWindow(total, c * n)
            train_stage(stage, rag, load_qa(data / "train.jsonl"), cfg, optimizer_state=moments, window=window)
    else:
        dirs = sorted(p for p in sites.iterdir() if p.is_dir())
        rags = [load(d / "corpus.jsonl") for d in dirs]
        train = [load_qa(d / "train.jsonl") for d in dirs]
        moments = [{} if args.keep_optimizer else None for _ in dirs]
        rag, n = rags[0], total // args.rounds
        base = get_state(rag, ("retriever",))
        glob = dict(base)
        for rnd in range(1, args.rounds + 1):
            outs = []
            for site, ex, mom in zip(rags, train, moments):
                set_state(site, glob)
                cfg = TrainConfig(steps=n, batch_size=4, lr_retriever=args.lr, seed=rnd - 1)
                train_stage(stage, site, ex, cfg, optimizer_state=mom, window=RoundWindow(total, (rnd - 1) * n))
                outs.append((get_state(site, ("retriever",)), len(ex)))
            weight = sum(w for _, w in outs)
            glob = {k: sum(o[k] * w for o, w in outs) / weight for k in glob}
            set_state(rag, glob)
            print(f"round {rnd}: Recall@1/5 {recall(rag)}", flush=True)
    new = get_state(rag, ("retriever",))
    moved = float(sum(((new[k] - base[k]) ** 2).sum() for k in base) ** 0.5)
    r1, r5 = recall(rag)
    print(
        f"{args.mode} lr {args.lr} chunks {args.chunks} rounds {args.rounds} keep {args.keep_optimizer}: "
        f"Recall@1 {r1:.3f} Recall@5 {r5:.3f} L2 moved {moved:.2f} ({time.perf_counter() - t0:.0f}s)"
    )


if __name__ == "__main__":
    main()
