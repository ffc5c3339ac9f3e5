"""Split one dataset across federated sites, each with its own private corpus."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from fedrag.data.jsonl import write_jsonl
from fedrag.data.types import Example, Passage
from fedrag.errors import FedragError


@dataclass
class SiteData:
    passages: list[Passage]
    train: list[Example]


def partition(passages: list[Passage], examples: list[Example], n_sites: int, mode: str = "iid", seed: int = 0) -> list[SiteData]:
    """``iid``: questions shuffled and dealt round-robin. ``by-title``: whole titles
    (topics/people/articles) go to one site, so sites see different topics (non-IID).

    Each site's corpus holds the gold passages of its questions plus an equal share
    of the remaining passages; passages and questions never appear on two sites.
    """
    if n_sites < 1:
        raise FedragError("need at least one site")
    rng = random.Random(seed)
    title_of = {p.id: p.title for p in passages}
    if mode == "iid":
        order = examples[:]
        rng.shuffle(order)
        site_of_example = {e.id: i % n_sites for i, e in enumerate(order)}
    elif mode == "by-title":
        titles = sorted({title_of.get(e.gold_ids[0], "") if e.gold_ids else "" for e in examples})
        rng.shuffle(titles)
        site_of_title = {t: i % n_sites for i, t in enumerate(titles)}
        site_of_example = {e.id: site_of_title[title_of.get(e.gold_ids[0], "") if e.gold_ids else ""] for e in examples}
    else:
        raise FedragError(f"partition must be 'iid' or 'by-title', got '{mode}'")
    site_of_passage: dict[str, int] = {}
    for e in examples:
        for g in e.gold_ids:
            site_of_passage.setdefault(g, site_of_example[e.id])
    if mode == "by-title":  # a title's other passages follow it
        title_site = {title_of[p]: s for p, s in site_of_passage.items()}
        for p in passages:
            if p.id not in site_of_passage and p.title in title_site:
                site_of_passage[p.id] = title_site[p.title]
    rest = [p for p in passages if p.id not in site_of_passage]
    rng.shuffle(rest)
    for i, p in enumerate(rest):
        site_of_passage[p.id] = i % n_sites
    sites = [SiteData([], []) for _ in range(n_sites)]
    for p in passages:
        sites[site_of_passage[p.id]].passages.append(p)
    for e in examples:
        sites[site_of_example[e.id]].train.append(e)
    if any(not s.train or not s.passages for s in sites):
        raise FedragError(f"cannot split {len(examples)} examples into {n_sites} non-empty sites")
    return sites


def write_sites(sites: list[SiteData], out_dir: str | Path) -> list[dict[str, str]]:
    """Write ``site{i}/corpus.jsonl`` and ``site{i}/train.jsonl``; return their paths."""
    paths = []
    for i, site in enumerate(sites):
        d = Path(out_dir) / f"site{i}"
        write_jsonl(d / "corpus.jsonl", site.passages)
        write_jsonl(d / "train.jsonl", site.train)
        paths.append({"corpus": str(d / "corpus.jsonl"), "train": str(d / "train.jsonl")})
    return paths
