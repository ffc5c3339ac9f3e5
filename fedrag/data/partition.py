"""Split one dataset across federated sites, each with its own private corpus."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedrag._settings import check_choice
from fedrag.data.jsonl import write_jsonl
from fedrag.data.types import Example, Passage
from fedrag.errors import FedragError


@dataclass
class SiteData:
    passages: list[Passage]
    train: list[Example]


Partition = Literal["iid", "by-title"]  # how questions are dealt to sites


def partition(passages: list[Passage], examples: list[Example], n_sites: int, mode: str = "iid", seed: int = 0) -> list[SiteData]:
    """Deal questions and passages to `n_sites` sites.

    `iid`: questions are grouped by their first gold passage (all questions about one
    passage stay together) and the groups are shuffled and dealt round-robin.
    `by-title`: whole titles (topics, people, articles) go to one site, so sites see
    different topics (non-IID).

    Every question's gold passages are in its site's corpus, so retrieval can succeed
    locally; the remaining passages are dealt out evenly. A passage lands on two sites
    only when multi-gold questions about it were dealt apart (multi-hop data).
    """
    if n_sites < 1:
        raise FedragError("need at least one site")
    check_choice(mode, Partition, "partition")
    rng = random.Random(seed)
    title_of = {p.id: p.title for p in passages}

    def key(e: Example) -> str:
        if not e.gold_ids:
            return f"question:{e.id}"
        return e.gold_ids[0] if mode == "iid" else f"title:{title_of.get(e.gold_ids[0], '')}"

    groups = sorted({key(e) for e in examples})
    rng.shuffle(groups)
    site_of_group = {g: i % n_sites for i, g in enumerate(groups)}
    site_of_example = {e.id: site_of_group[key(e)] for e in examples}
    homes: dict[str, set[int]] = {}
    for e in examples:
        for g in e.gold_ids:
            homes.setdefault(g, set()).add(site_of_example[e.id])
    if mode == "by-title":  # a title's other passages follow it
        title_site = {title_of[p]: min(s) for p, s in homes.items() if p in title_of}
        for p in passages:
            if p.id not in homes and p.title in title_site:
                homes[p.id] = {title_site[p.title]}
    rest = [p for p in passages if p.id not in homes]
    rest_groups = sorted({p.title if mode == "by-title" else p.id for p in rest})
    rng.shuffle(rest_groups)
    deal = {g: i % n_sites for i, g in enumerate(rest_groups)}
    for p in rest:
        homes[p.id] = {deal[p.title if mode == "by-title" else p.id]}
    sites = [SiteData([], []) for _ in range(n_sites)]
    for p in passages:
        for s in sorted(homes[p.id]):
            sites[s].passages.append(p)
    for e in examples:
        sites[site_of_example[e.id]].train.append(e)
    if any(not s.train or not s.passages for s in sites):
        raise FedragError(f"cannot split {len(examples)} examples into {n_sites} non-empty sites")
    return sites


def write_sites(sites: list[SiteData], out_dir: str | Path) -> list[dict[str, str]]:
    """Write `site{i}/corpus.jsonl` and `site{i}/train.jsonl`; return their paths."""
    paths = []
    for i, site in enumerate(sites):
        d = Path(out_dir) / f"site{i}"
        write_jsonl(d / "corpus.jsonl", site.passages)
        write_jsonl(d / "train.jsonl", site.train)
        paths.append({"corpus": str(d / "corpus.jsonl"), "train": str(d / "train.jsonl")})
    return paths


def evenly_spaced(items: list, n: int | None) -> list:
    """`n` items spread evenly through `items` (all of them when `n` is None or not
    smaller): a file sorted by article or topic keeps every part represented, where its
    first `n` lines would be one article's questions."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]
