"""A federated round against a small and a large site store: does a round's cost grow with
the corpus? Same questions, same steps, the default settings (a retriever LoRA adapter,
`--index-refresh auto` = rerank on sites); `--control` adds a run with `--index-refresh
phase` (re-embed the store each round) on the smallest store.

    python benchmarks/fed_store_scale.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json \
        [--sizes 2000,20000] [--rounds 3] [--questions 96] [--control] [--work /tmp/fed-store]

One site, the contrastive stage (the stage that trains the passage side, so the store goes
stale), MiniLM, no generator. The 2,000-passage store holds SQuAD dev paragraphs; larger
stores add the sentence windows of `store_scale.py` (distinct texts), so every store holds
the gold passages of the same questions. Round 1 includes building the site's store (its
embeddings are cached in the work directory, so a second run of the script skips that);
rounds 2.. are what a round costs once the store exists. Per round: wall seconds (server
side), the site's load seconds (tensors in, store sync) and training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def site_files(squad: str, size: int, questions: int, d: Path) -> dict[str, str]:
    """The site's corpus (`size` passages) and training questions, written under `d`."""
    from store_scale import corpus

    from fedrag.data import converters
    from fedrag.data.jsonl import write_jsonl

    paragraphs, examples = converters.squad(squad)
    base = paragraphs[:2000]
    ids = {p.id for p in base}
    qa = [e for e in examples if e.gold_ids and set(e.gold_ids) <= ids]
    qa = qa[:: max(1, len(qa) // questions)][:questions]
    filler, _ = corpus(squad, max(0, size - len(base)))
    rows = [{"id": p.id, "title": p.title, "text": p.text} for p in base][:size]
    rows += [{"id": f"w{r['id']}", "title": r["title"], "text": r["text"]} for r in filler]
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "corpus.jsonl", rows)
    write_jsonl(
        d / "train.jsonl", [{"id": e.id, "question": e.question, "answers": e.answers, "gold_ids": e.gold_ids} for e in qa]
    )
    return {"corpus": str(d / "corpus.jsonl"), "train": str(d / "train.jsonl")}


def run(site: dict, out: Path, rounds: int, refresh: str) -> list[dict]:
    from fedrag.federation import FedTask, simulate

    task = FedTask(
        stage="contrastive",
        retriever="minilm",
        generator="none",
        rounds=rounds,
        min_sites=1,
        evaluate_every=0,
        index_refresh=refresh,
        out=str(out),
    )
    simulate(task, [site], cpus_per_site=2)
    return json.loads((out / "rounds.json").read_text())


def site_metric(entry: dict, key: str) -> float:
    (m,) = entry["site_metrics"].values()
    return float(m[key])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--squad", required=True)
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--questions", type=int, default=96)
    ap.add_argument("--control", action="store_true", help="also --index-refresh phase on the smallest store")
    ap.add_argument("--work", default="/tmp/fed-store")
    args = ap.parse_args()
    work = Path(args.work)
    os.environ["FEDRAG_CACHE"] = str(work / "cache")
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [(n, "auto") for n in sizes] + ([(sizes[0], "phase")] if args.control else [])
    rows, later = [], {}
    for size, refresh in runs:
        site = site_files(args.squad, size, args.questions, work / f"site{size}")
        hist = run(site, work / f"out{size}-{refresh}", args.rounds, refresh)
        secs = [h["seconds"] for h in hist]
        later[(size, refresh)] = statistics.median(secs[1:])
        for h in hist:
            rows.append(
                [
                    size,
                    refresh,
                    h["round"],
                    h["seconds"],
                    site_metric(h, "load-s"),
                    site_metric(h, "client-wall-s"),
                    h["bytes_sent"] + h.get("context_bytes_sent", 0),
                    h["bytes_received"],
                ]
            )
    print(
        table(
            ["passages", "--index-refresh", "round", "round s", "site load s", "site train s", "bytes to site", "bytes back"],
            rows,
        )
    )
    small = later[(sizes[0], "auto")]
    print()
    print(
        table(
            ["passages", "--index-refresh", "median round s (rounds 2..)", f"vs {sizes[0]} passages (default)"],
            [[n, r, s, s / small] for (n, r), s in later.items()],
        )
    )


if __name__ == "__main__":
    main()
