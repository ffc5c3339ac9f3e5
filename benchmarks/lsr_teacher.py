"""How good a teacher is the generator for LSR? Gold-passage accuracy of p_LM vs p_R.

    python benchmarks/lsr_teacher.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json [--n 100] [--k 8]

LSR moves the retriever's distribution over its top-k towards the LM's,
p_LM(z_i) ∝ p(answer | z_i, question). That can only help Recall if the LM ranks the
gold passage higher than the retriever does. For ``--n`` training questions (SQuAD dev,
split by article as in squad_stages.py) whose gold paragraph is in the retriever's top-k,
this prints how often each side puts the gold paragraph first, the gold's mean rank
under each, and the mean p_LM and p_R (γ = 0.1, as LSRStage) given to the gold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import squad_split, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--squad", required=True)
    ap.add_argument("--out", default="runs/lsr_teacher")
    ap.add_argument("--n", type=int, default=100, help="training questions with the gold in the top-k")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    import torch

    from fedrag.pipeline import build_training_rag
    from fedrag.train import LSRStage

    _, train, _, corpus = squad_split(args.squad, args.out)
    rag = build_training_rag(corpus, "minilm", "smollm2-135m", top_k=args.k)
    stage = LSRStage(top_k=args.k)  # the teacher LSR itself would use: its prompts, its scorer
    t0 = time.perf_counter()
    firsts = {"retriever": 0, "LM": 0}
    ranks = {"retriever": [], "LM": []}
    mass = {"retriever": [], "LM": []}
    seen = 0
    for i in range(0, len(train), args.batch):
        if seen >= args.n:
            break
        batch = train[i : i + args.batch]
        with torch.no_grad():
            scores, lm_logp, pos, _, _ = stage.scores(rag, batch, grad=False)
        for j, e in enumerate(batch):
            gold = [c for c, p in enumerate(pos[j]) if rag.store.passages[p].id in e.gold_ids]
            if not gold or seen >= args.n:
                continue  # LSR cannot move a gold paragraph that is not in the top-k
            for side, s in (("retriever", scores[j] / stage.gamma), ("LM", lm_logp[j] / stage.tau)):
                order = torch.argsort(s, descending=True).tolist()
                firsts[side] += order[0] == gold[0]
                ranks[side].append(order.index(gold[0]) + 1)
                mass[side].append(float(torch.softmax(s, -1)[gold[0]]))
            seen += 1
    wall = time.perf_counter() - t0
    rows = [[side, firsts[side] / seen, sum(ranks[side]) / seen, sum(mass[side]) / seen] for side in ("retriever", "LM")]
    print(table(["ranks the top-k by", "gold first", "mean gold rank", "mean probability on gold"], rows))
    print(
        f"\n{seen} SQuAD training questions with the gold paragraph in MiniLM's top-{args.k}; "
        f"LM = SmolLM2-135M log p(answer | paragraph, question); {wall:.0f} s"
    )


if __name__ == "__main__":
    main()
