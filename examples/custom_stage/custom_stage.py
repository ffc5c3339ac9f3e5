"""Your own stage, composed with built-in ones, trained centrally and federated.

    python examples/custom_stage/custom_stage.py --data data/demo --out runs/example-custom

A stage is any object with ``name``, ``trains`` and ``loss(rag, batch) -> StepOutput``
(:class:`fedrag.Stage`); no subclassing. This one is RALT with a per-question mean
answer NLL: every answer weighs the same however many tokens it has (fedrag's RALT
averages over all answer tokens of the batch, so long answers weigh more).
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import fedrag
from fedrag import (
    ContrastiveStage,
    FedTask,
    StepOutput,
    TrainConfig,
    build_training_rag,
    custom,
    load_corpus,
    load_qa,
    save_outputs,
    simulate,
)
from fedrag.data.partition import partition, write_sites


@dataclass
class PerQuestionRALT:
    r"""Generator stage: :math:`\frac{1}{B}\sum_b -\frac{1}{|y_b|}\log p_\theta(y_b | x_b, z_{1..k})`,
    all top-k passages in one prompt."""

    name: ClassVar[str] = "per-question-ralt"
    trains: ClassVar[tuple[str, ...]] = ("generator",)
    top_k: int = 3

    @property
    def decoding(self) -> dict:  # optional: how a generator trained this way is decoded
        return {"decoding": "concat", "gamma": 1.0}

    def loss(self, rag, batch) -> StepOutput:
        q, tokens = rag.retriever.embed_queries([e.question for e in batch])
        _, pos = rag.store.search(q, self.top_k)
        gen = rag.generator
        prompts = [gen.prompt(e.question, [rag.store.passages[p] for p in row]) for e, row in zip(batch, pos)]
        out = gen.score(prompts, [e.answers[0] for e in batch])
        loss = (-out.seq_logp / out.mask.sum(-1)).mean()
        return StepOutput(loss, retriever_tokens=tokens, generator_tokens=out.n_tokens, generator_grad=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--retriever", default="minilm")
    ap.add_argument("--generator", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cpus-per-site", type=float, default=1.0, help="Ray CPUs per site (the core count: one actor)")
    ap.add_argument("--out", default="runs/example-custom")
    args = ap.parse_args()
    fedrag.apply_defaults()
    out = Path(args.out).resolve()
    plan = custom("per-question-then-contrastive", PerQuestionRALT(), ContrastiveStage(top_k=3))

    # centrally
    rag = build_training_rag(
        f"{args.data}/corpus.jsonl", args.retriever, args.generator, top_k=3, shared_retriever=plan.shared_retriever
    )
    results = plan.run(rag, load_qa(f"{args.data}/train.jsonl"), TrainConfig(steps=args.steps, lr_generator=1e-3))
    save_outputs(rag, out / "central", results, plan.name, plan=plan)

    # federated: the same object, captured by the simulation
    sites = write_sites(
        partition(load_corpus(f"{args.data}/corpus.jsonl"), load_qa(f"{args.data}/train.jsonl"), 2, "iid"), out / "sites"
    )
    task = FedTask(
        strategy=plan.name,
        retriever=args.retriever,
        generator=args.generator,
        rounds=1,
        local_steps=max(1, args.steps // 2),
        lr_generator=1e-3,
        out=str(out / "federated"),
    )
    cost = simulate(task, sites, plan=plan, cpus_per_site=args.cpus_per_site)
    print(json.dumps({"central_loss": [round(r.final_loss, 4) for r in results], "federated_rounds": cost["rounds"]}))


if __name__ == "__main__":
    main()
