"""A synthetic QA corpus about fictional people, deterministic from a seed.

No pretrained model can know these facts, so answers must come from retrieval.
Names share first and last name parts across people (`Varn Okelli` vs `Varn
Tessaly`), which makes passages confusable for an untuned retriever. Each person
has two passages (a biography and a career note); each question has exactly one
gold passage. Train and test questions are about *different* people, so a model
cannot memorise test answers; it must read the retrieved passage.
"""

from __future__ import annotations

import random
from pathlib import Path

from fedrag.data.jsonl import write_jsonl
from fedrag.data.types import Example, Passage

_ONSETS = ["b", "br", "d", "dr", "f", "g", "k", "kr", "l", "m", "n", "p", "r", "s", "t", "tr", "v", "z", "qu", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "x", "m"]
_PROFESSIONS = [
    "glassblower",
    "cartographer",
    "beekeeper",
    "astronomer",
    "clockmaker",
    "botanist",
    "shipwright",
    "violin maker",
    "archivist",
    "stonemason",
    "perfumer",
    "falconer",
    "bookbinder",
    "geologist",
]
_INSTRUMENTS = ["cello", "harp", "oboe", "lute", "accordion", "flute", "bagpipes", "zither", "trumpet", "marimba"]
_SUFFIXES = ["Works", "Guild", "Company", "Foundry", "Press", "Trading House", "Collective", "Atelier"]
_TOWN_END = ["moor", "haven", "ford", "wick", "dale", "port", "stead", "holm"]

_QUESTIONS = {
    "town": ["In which town was {name} born?", "Where was {name} born?"],
    "year": ["In what year was {name} born?", "When was {name} born?"],
    "profession": ["What was {name}'s profession?", "What did {name} work as?"],
    "company": ["Which company did {name} found?", "What is the name of the company {name} started?"],
    "instrument": ["Which instrument did {name} play?", "What instrument was {name} known to play?"],
}


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


def _unique(rng: random.Random, make, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = make()
        if w not in out:
            out.append(w)
    return out


def generate(n_people: int = 120, seed: int = 0, test_fraction: float = 0.25):
    """Return `(passages, train, test)`; the same seed always gives the same data."""
    rng = random.Random(seed)
    firsts = _unique(rng, lambda: _word(rng, 2), max(4, n_people // 4))
    lasts = _unique(rng, lambda: _word(rng, 3), max(4, n_people // 3))
    names = _unique(rng, lambda: f"{rng.choice(firsts)} {rng.choice(lasts)}", n_people)
    towns = _unique(rng, lambda: _word(rng, 2) + rng.choice(_TOWN_END), max(8, n_people // 3))
    passages, examples = [], []
    for i, name in enumerate(names):
        facts = {
            "town": rng.choice(towns),
            "year": str(rng.randint(1620, 1910)),
            "profession": rng.choice(_PROFESSIONS),
            "company": f"{_word(rng, 2)} {rng.choice(_SUFFIXES)}",
            "instrument": rng.choice(_INSTRUMENTS),
        }
        bio_id, career_id = f"p{i:04d}-bio", f"p{i:04d}-career"
        passages.append(
            Passage(
                id=bio_id,
                title=name,
                text=f"{name} was born in {facts['town']} in {facts['year']}. "
                f"Trained from an early age, {name.split()[0]} became a renowned {facts['profession']} "
                f"whose work was admired across the region.",
            )
        )
        passages.append(
            Passage(
                id=career_id,
                title=name,
                text=f"Later in life, {name} founded {facts['company']}, which still bears the name. "
                f"In the evenings {name.split()[-1]} played the {facts['instrument']} for friends and guests.",
            )
        )
        for slot, templates in _QUESTIONS.items():
            gold = bio_id if slot in ("town", "year", "profession") else career_id
            examples.append(
                (
                    i,
                    Example(
                        id=f"q{i:04d}-{slot}",
                        question=rng.choice(templates).format(name=name),
                        answers=(facts[slot],),
                        gold_ids=(gold,),
                    ),
                )
            )
    people = list(range(n_people))
    rng.shuffle(people)
    test_people = set(people[: max(1, round(n_people * test_fraction))])
    train = [e for p, e in examples if p not in test_people]
    test = [e for p, e in examples if p in test_people]
    rng.shuffle(train)
    return passages, train, test


def write(out_dir: str | Path, seed: int = 0, n_people: int = 120) -> dict[str, int]:
    """Write `corpus.jsonl`, `train.jsonl` and `test.jsonl` under `out_dir`."""
    out = Path(out_dir)
    passages, train, test = generate(n_people=n_people, seed=seed)
    write_jsonl(out / "corpus.jsonl", passages)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    return {"passages": len(passages), "train": len(train), "test": len(test)}
