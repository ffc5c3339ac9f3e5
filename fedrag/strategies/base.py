"""A strategy is an ordered list of stages, each trained for its own steps/learning rates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedrag._io import atomic_write_json
from fedrag.data.types import Example
from fedrag.generate.decoding import RETRIEVAL_GAMMA, save_decoding
from fedrag.train.cost import Cost
from fedrag.train.loop import StageResult, TrainConfig, train_stage
from fedrag.train.protocol import Stage


@dataclass
class Phase:
    """One stage of a strategy, with optional per-phase overrides of the TrainConfig."""

    stage: Stage
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stage.name

    def config(self, base: TrainConfig) -> TrainConfig:
        return replace(base, **self.overrides)


@dataclass
class Strategy:
    """Named composition of stages; ``run`` trains them in order on one RAG system."""

    name: str
    phases: list[Phase]
    description: str = ""

    @property
    def trains(self) -> tuple[str, ...]:
        return tuple(sorted({side for p in self.phases for side in p.stage.trains}))

    @property
    def decoding(self) -> dict:
        """``{"decoding", "gamma"}`` matching how the generator was last trained: the
        ``decoding`` of the last phase that trains the generator (a stage may declare
        one), else concat (an untouched generator keeps its usual prompt)."""
        for phase in reversed(self.phases):
            if "generator" in phase.stage.trains:
                return dict(getattr(phase.stage, "decoding", None) or {"decoding": "concat", "gamma": 1.0})
        return {"decoding": "concat", "gamma": 1.0}

    def run(self, rag, train: list[Example], cfg: TrainConfig, val: list[Example] | None = None,
            out_dir: str | Path | None = None, evaluate_fn=None) -> list[StageResult]:
        results = []
        for i, phase in enumerate(self.phases):
            pcfg = phase.config(cfg)
            pdir = Path(out_dir) / f"phase{i}-{phase.name}" if out_dir else None
            res = train_stage(phase.stage, rag, train, pcfg, val=val, out_dir=pdir, evaluate_fn=evaluate_fn)
            results.append(res)
            if out_dir:
                with open(Path(out_dir) / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    for rec in res.history:
                        fh.write(json.dumps({"phase": i, **rec}) + "\n")
        return results


def total_cost(results: list[StageResult], name: str) -> dict:
    total = Cost(name=name)
    for r in results:
        total = total.add(r.cost)
    return {"strategy": name, "total": total.to_dict(), "stages": [r.cost.to_dict() for r in results]}


def save_outputs(rag, out_dir: str | Path, results: list[StageResult], strategy_name: str, extra: dict | None = None,
                 decoding: dict | None = None) -> None:
    """Write DIR/retriever, DIR/generator (adapter or full model, with the ``decoding``
    that matches its training recorded in it) and DIR/cost.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rag.retriever.save(out / "retriever")
    if rag.generator is not None:
        rag.generator.save(out / "generator")
        if decoding:
            save_decoding(out / "generator", decoding["decoding"], decoding.get("gamma", RETRIEVAL_GAMMA), strategy_name)
    atomic_write_json(out / "cost.json", {**total_cost(results, strategy_name), **(extra or {})})
