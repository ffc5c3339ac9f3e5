"""Federated simulation vs centralized training of the same stage, examples and steps;
and the per-round overhead of a real deployment (SuperLink + SuperNodes on loopback).

    python benchmarks/federated_overhead.py [--stage ralt] [--steps 24] [--sites 2] [--rounds 2] [--deployment]
    python benchmarks/federated_overhead.py --rounds 3 --deployment   # #22's 2 sites x 3 rounds

Centralized: ``steps`` optimizer steps of batch B on all examples. Federated: S sites ×
R rounds × (steps / (S·R)) local steps of batch B, so both see the same number of
examples and steps. Ratio = federated wall / centralized wall (start-up included).

The centralized run does no evaluation; the simulation runs twice, with the sites'
per-round evaluation (the default, ``evaluate_every=1``) and without it (``0``), the
like-for-like row. The deployment runs without it (each evaluate message is one more
ClientApp process per site), its sites capped at cores // sites threads each, twice: with
resident site workers (fedrag's default: models stay loaded across rounds) and with the
models loaded in every ClientApp process. "ratio vs simulation" compares with the
simulation without site evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", default="ralt")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--deployment", action="store_true", help="also time a loopback deployment")
    ap.add_argument("--deployment-only", action="store_true", help="only the deployment (profiling; no ratio)")
    ap.add_argument(
        "--pair",
        action="store_true",
        help="only the like-for-like pair: the simulation without site evaluation and the resident deployment",
    )
    args = ap.parse_args()
    from fedrag.data import demo, load_corpus, load_qa
    from fedrag.data.partition import partition, write_sites
    from fedrag.federation.launch.simulation import simulate
    from fedrag.federation.task import FedTask
    from fedrag.pipeline import build_training_rag
    from fedrag.train import TrainConfig, make_stage, train_stage

    work = Path(tempfile.mkdtemp(prefix="fedbench-"))
    demo.write(work / "data")
    passages, train = load_corpus(work / "data" / "corpus.jsonl"), load_qa(work / "data" / "train.jsonl")
    sites = write_sites(partition(passages, train, args.sites, "iid"), work / "sites")
    local = args.steps // (args.sites * args.rounds)
    examples = local * args.sites * args.rounds * args.batch_size
    central, rows, per_round = float("nan"), [], {}
    if not (args.deployment_only or args.pair):
        t0 = time.perf_counter()
        rag = build_training_rag(str(work / "data" / "corpus.jsonl"), "minilm", "smollm2-135m")
        res = train_stage(
            make_stage(args.stage), rag, train, TrainConfig(steps=local * args.sites * args.rounds, batch_size=args.batch_size)
        )
        central = time.perf_counter() - t0
        rows.append(["centralized", res.cost.steps, res.cost.examples, central, 1.0, "-"])
    for every in () if args.deployment_only else (0,) if args.pair else (1, 0):
        task = FedTask(
            stage=args.stage,
            rounds=args.rounds,
            local_steps=local,
            batch_size=args.batch_size,
            min_sites=args.sites,
            evaluate_every=every,
            out=str(work / f"fed-eval{every}"),
        )
        t0 = time.perf_counter()
        cost = simulate(task, sites)
        fed = time.perf_counter() - t0
        rounds = json.loads((work / f"fed-eval{every}" / "rounds.json").read_text())
        label = f"simulation, {args.sites} sites x {args.rounds} rounds x {local} steps, " + (
            "sites evaluate each round" if every else "no site evaluation"
        )
        rows.append(
            [label, local * args.sites * args.rounds, examples, fed, fed / central, cost["bytes_sent"] + cost["bytes_received"]]
        )
        per_round[label] = rounds
    for resident in (True,) if args.pair else (True, False) if (args.deployment or args.deployment_only) else ():
        from fedrag.federation.launch.deployment import deploy

        name = "resident" if resident else "per-message"
        dtask = FedTask(
            stage=args.stage,
            rounds=args.rounds,
            local_steps=local,
            batch_size=args.batch_size,
            min_sites=args.sites,
            evaluate_every=0,
            out=str(work / f"dep-out-{name}"),
        )
        t0 = time.perf_counter()
        dcost = deploy(dtask, sites, work / f"dep-{name}", resident=resident)
        dep = time.perf_counter() - t0
        label = f"deployment, {args.sites} SuperNodes, no site evaluation, " + (
            "resident site workers" if resident else "models loaded per message"
        )
        rows.append(
            [label, local * args.sites * args.rounds, examples, dep, dep / central, dcost["bytes_sent"] + dcost["bytes_received"]]
        )
        per_round[label] = json.loads((work / f"dep-out-{name}" / "rounds.json").read_text())
    sim = next((r[3] for r in rows if "simulation" in r[0] and "no site evaluation" in r[0]), float("nan"))
    rows = [[*r, r[3] / sim] for r in rows]
    print(
        table(
            ["run", "optimizer steps", "examples", "wall s", "ratio vs centralized", "bytes on the wire", "ratio vs simulation"],
            rows,
        )
    )
    print("\nWhere each round's seconds go (site figures are the sites' means; the sites run in parallel):")
    keys = ("dispatch-s", "startup-s", "prepare-s", "load-s", "client-wall-s")
    split = []
    for label, rounds in per_round.items():
        for r in rounds:
            parts = [r.get(f"clients_{k}", 0.0) for k in keys]
            split.append([label, r["round"], r["seconds"], *parts, r["seconds"] - sum(parts), r["seconds"] - parts[-1]])
    print(
        table(
            [
                "run",
                "round",
                "round s",
                "dispatch s (Flower: SuperNode/SuperExec polling, ClientApp launch; queueing in simulation)",
                "ClientApp start-up s (imports, app install, pulling the message)",
                "prepare s (site policy, plan, site data)",
                "load s (imports, models, store, tensors)",
                "training s",
                "rest s (reply transport, server polling, aggregation, checkpoint)",
                "overhead s (round - training)",
            ],
            split,
        )
    )


if __name__ == "__main__":
    main()
