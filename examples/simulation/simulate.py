"""The same strategy across N sites in Flower's Simulation Engine, from Python.

    python examples/simulation/simulate.py --data data/demo --strategy ra-dit --sites 2 --rounds 2 --out runs/example-sim

The training questions and passages are partitioned across the sites (``iid`` or
``by-title``); each site keeps its own questions and knowledge store.
"""

import argparse
import json
from pathlib import Path

import fedrag
from fedrag import FedTask, load_corpus, load_qa, simulate
from fedrag.data.partition import partition, write_sites


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--strategy", default="ra-dit")
    ap.add_argument("--retriever", default="minilm")
    ap.add_argument("--generator", default="smollm2-135m")
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--partition", default="iid", choices=["iid", "by-title"])
    ap.add_argument("--cpus-per-site", type=float, default=1.0, help="Ray CPUs per site (the core count: one actor)")
    ap.add_argument("--out", default="runs/example-simulation")
    args = ap.parse_args()
    fedrag.apply_defaults()

    out = Path(args.out).resolve()
    sites = write_sites(
        partition(load_corpus(f"{args.data}/corpus.jsonl"), load_qa(f"{args.data}/train.jsonl"), args.sites, args.partition),
        out / "sites",
    )
    task = FedTask(
        strategy=args.strategy,
        retriever=args.retriever,
        generator=args.generator,
        rounds=args.rounds,
        local_steps=args.local_steps,
        min_sites=args.sites,
        lr_generator=1e-3,
        out=str(out / "model"),
    )
    cost = simulate(task, sites, cpus_per_site=args.cpus_per_site)  # writes out/model/{retriever,generator,rounds.json,cost.json}
    print(json.dumps({k: v for k, v in cost.items() if k in ("strategy", "rounds", "bytes_sent", "bytes_received")}))


if __name__ == "__main__":
    main()
