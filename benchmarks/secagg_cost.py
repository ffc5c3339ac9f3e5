"""What secure aggregation (Flower's SecAgg+, `--secagg`) costs against plain FedAvg on
the same task: wall time, round time, bytes each way, and how far its decoded update is
from FedAvg's.

    python benchmarks/secagg_cost.py [--sites 2] [--rounds 2] [--local-steps 3] [--deployment | --deployment-only]

Bundled MiniLM + SmolLM2-135M (LoRA), RALT on the demo data, no site evaluation. Each pair
runs the same task with and without `--secagg` (simulation; with `--deployment` also a
loopback SuperLink + SuperNodes with resident site workers, where each of the protocol's
four exchanges is one ClientApp process per site). "update rel. diff" is
‖Δ_secagg − Δ_fedavg‖ / ‖Δ_fedavg‖ over the generator's LoRA tensors, Δ being the final
adapter minus the starting one.
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


def _lora(path) -> dict:
    from fedrag.generate import Generator

    gen = Generator.load(str(path))
    return {n: p.detach().double().clone() for n, p in gen.model.named_parameters() if "lora_" in n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--deployment", action="store_true", help="also a loopback deployment pair")
    ap.add_argument("--deployment-only", action="store_true", help="only the loopback deployment pair")
    args = ap.parse_args()
    from fedrag.data import demo, load_corpus, load_qa
    from fedrag.data.partition import partition, write_sites
    from fedrag.federation.server.run_loop import _server_model
    from fedrag.federation.launch.simulation import simulate
    from fedrag.federation.task import FedTask

    work = Path(tempfile.mkdtemp(prefix="secaggbench-"))
    demo.write(work / "data")
    passages, train = load_corpus(work / "data" / "corpus.jsonl"), load_qa(work / "data" / "train.jsonl")
    sites = write_sites(partition(passages, train, args.sites, "iid"), work / "sites")
    engines = (["simulation"] if not args.deployment_only else []) + (
        ["deployment"] if args.deployment or args.deployment_only else []
    )
    rows, finals = [], {}
    for engine in engines:
        for secagg in (False, True):
            name = f"{engine}-{'secagg' if secagg else 'fedavg'}"
            task = FedTask(
                stage="ralt",
                rounds=args.rounds,
                local_steps=args.local_steps,
                batch_size=args.batch_size,
                min_sites=args.sites,
                evaluate_every=0,
                secagg=secagg,
                out=str(work / name),
            )
            t0 = time.perf_counter()
            if engine == "simulation":
                cost = simulate(task, sites)
            else:
                from fedrag.federation.launch.deployment import deploy

                cost = deploy(task, sites, work / f"dep-{name}", resident=True)
            wall = time.perf_counter() - t0
            rounds = json.loads((work / name / "rounds.json").read_text())
            finals[name] = _lora(work / name / "generator")
            rows.append(
                [
                    engine,
                    "SecAgg+" if secagg else "FedAvg",
                    wall,
                    sum(r["seconds"] for r in rounds) / len(rounds),
                    cost["bytes_sent"],
                    cost["bytes_received"],
                    sum(r.get("secagg_protocol_bytes", 0) for r in rounds),
                    sum(r.get("secure_aggregation", {}).get("clipped_values", 0) for r in rounds),
                ]
            )
    start = {
        n: p.detach().double().clone()
        for n, p in _server_model(FedTask(stage="ralt")).generator.model.named_parameters()
        if "lora_" in n
    }
    out = []
    for i in range(0, len(rows), 2):
        plain, secure = rows[i], rows[i + 1]
        a, b = finals[f"{plain[0]}-secagg"], finals[f"{plain[0]}-fedavg"]
        num = sum(float(((a[k] - start[k]) - (b[k] - start[k])).norm() ** 2) for k in start)
        den = sum(float((b[k] - start[k]).norm() ** 2) for k in start)
        out.append([*plain, 1.0, 1.0, "-"])
        out.append([*secure, secure[2] / plain[2], secure[3] / plain[3], f"{(num / den) ** 0.5:.2e}"])
    print(
        table(
            [
                "engine",
                "aggregation",
                "wall s",
                "round s (mean)",
                "bytes sent",
                "bytes received",
                "protocol bytes (keys, shares)",
                "values clipped",
                "wall ratio",
                "round ratio",
                "update rel. diff",
            ],
            out,
        )
    )
    print(f"\n{args.sites} sites x {args.rounds} rounds x {args.local_steps} local steps (batch {args.batch_size})")


if __name__ == "__main__":
    main()
