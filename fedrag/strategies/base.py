"""A strategy is an ordered list of stages, each trained for its own steps/learning rates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from fedrag._io import atomic_dir, atomic_write_json, atomic_write_text
from fedrag._settings import names
from fedrag.data.types import Example
from fedrag.generate.decoding import RETRIEVAL_GAMMA, save_decoding
from fedrag.retrieve.retriever import LORA_LR
from fedrag.strategies.cards import write_model_card
from fedrag.train.cost import Cost
from fedrag.train.distributed import is_writer
from fedrag.train.loop import StageResult, TrainConfig, train_stage
from fedrag.train.protocol import Stage

if TYPE_CHECKING:
    from fedrag.rag import RAGSystem


# a federated phase's length is its rounds: neither a stage's default nor a phase's override of these applies on a site
LENGTH = names(TrainConfig, round_set=True)
# stage defaults a site does not take: a round ends with the weights it trained, for the server to aggregate
NOT_ON_SITES = names(TrainConfig, stage_default_on_sites=False)


@dataclass
class Phase:
    """One stage of a strategy, with optional per-phase overrides of the TrainConfig."""

    stage: Stage
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stage.name

    def config(self, base: TrainConfig, federated: bool = False, retriever_lora: bool = False) -> TrainConfig:
        """The settings this phase trains with: `base`, with the stage's own defaults
        (`Stage.defaults`) where the user set nothing, then this phase's overrides.
        `retriever_lora`: the retriever trains a LoRA adapter, so its learning rate is the
        adapter's (`fedrag.retrieve.retriever.LORA_LR`) unless the user set one.

        `federated`: on a site, the rounds and local steps set the length and schedule,
        so overrides of `steps`/`epochs`/`min_steps` do not apply there (nor does the
        stage's `min_steps`, nor its `keep_best`: a site's round ends with what it trained);
        every other override does, exactly as centrally."""
        return replace(base, **self.changes(type(base), base.explicit, federated, retriever_lora))

    def changes(
        self, cls: type = TrainConfig, explicit: tuple = (), federated: bool = False, retriever_lora: bool = False
    ) -> dict:
        """What [`config`][fedrag.strategies.base.Phase.config] changes in settings of class `cls`
        whose user-set names are `explicit`, as `{field: value}`: a caller that builds its
        settings from values (a federated site, once a round) applies them without a copy."""
        from fedrag.train.config import stage_defaults

        defaults = dict(getattr(self.stage, "defaults", None) or {})
        overrides = dict(self.overrides)
        if federated:
            for key in names(cls, round_set=True):  # LENGTH, for `cls`
                defaults.pop(key, None)
                overrides.pop(key, None)
            for key in names(cls, stage_default_on_sites=False):  # NOT_ON_SITES
                defaults.pop(key, None)
        if retriever_lora:  # a stage's rate is for full weights
            defaults["lr_retriever"] = LORA_LR
        return {**stage_defaults(cls, defaults, explicit), **overrides}


@dataclass
class Strategy:
    """Named composition of stages; `run` trains them in order on one RAG system."""

    name: str
    phases: list[Phase]
    description: str = ""

    @property
    def trains(self) -> tuple[str, ...]:
        return tuple(sorted({side for p in self.phases for side in p.stage.trains}))

    @property
    def shared_retriever(self) -> bool:
        """Some phase trains the passage encoder: the system needs a shared retriever."""
        return any(getattr(p.stage, "needs_shared_retriever", False) for p in self.phases)

    @property
    def decoding(self) -> dict:
        """`{"decoding", "gamma"}` matching how the generator was last trained: the
        `decoding` of the last phase that trains the generator (a stage may declare
        one), else concat (an untouched generator keeps its usual prompt)."""
        for phase in reversed(self.phases):
            if "generator" in phase.stage.trains:
                return dict(getattr(phase.stage, "decoding", None) or {"decoding": "concat", "gamma": 1.0})
        return {"decoding": "concat", "gamma": 1.0}

    def run(
        self,
        rag: RAGSystem,
        train: list[Example],
        cfg: TrainConfig,
        val: list[Example] | None = None,
        out_dir: str | Path | None = None,
        evaluate_fn: Callable[[RAGSystem, list[Example]], dict] | None = None,
        resume: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> list[StageResult]:
        """Train the phases in order on `rag`.

        Args:
            rag: the RAG system to train in place.
            train: training examples.
            cfg: the base settings; each phase applies its own overrides to them.
            val: validation examples for `evaluate_fn`.
            out_dir: where each phase writes `phaseI-NAME/` (metrics, checkpoints, and
                `done/` when it has finished) and the run's `metrics.jsonl`.
            evaluate_fn: `fn(rag, examples) -> metrics` for validation.
            resume: continue from `out_dir`: finished phases are loaded from `done/`,
                the interrupted one continues from its last checkpoint.
            log: `fn(message)` for what a resume skips.

        Returns:
            One [`StageResult`][fedrag.train.loop.StageResult] per phase.
        """
        results = []
        if self.shared_retriever and not rag.retriever.shared:  # a phase trains the passage side: it needs one encoder
            rag.retriever.share()
            rag.sync_store()
        for i, phase in enumerate(self.phases):
            pcfg = phase.config(cfg, retriever_lora=rag.retriever.is_lora)
            pdir = Path(out_dir) / f"phase{i}-{phase.name}" if out_dir else None
            res = _load_done(pdir, rag) if (resume and pdir) else None
            if res is not None:
                if log:
                    log(f"phase {i + 1}/{len(self.phases)} ({phase.name}) already finished: loaded")
            else:
                res = train_stage(phase.stage, rag, train, pcfg, val=val, out_dir=pdir, evaluate_fn=evaluate_fn, resume=resume)
                if log and res.best:
                    b = res.best
                    log(
                        f"phase {i + 1}/{len(self.phases)} ({phase.name}): kept step {b['step']} of {res.steps} "
                        f"({b['metric']} {b['value']:.3f} on {b['val_questions']} validation questions"
                        f"{', set aside from the training set' if b['carved'] else ''})"
                    )
                if pdir and is_writer():
                    _save_done(pdir, rag, phase.stage.trains, res)
            reencoded = rag.sync_store()  # the passage side moved: later phases retrieve from the new embeddings
            if reencoded:
                res.cost.wall_s += reencoded["reencode_s"]
            results.append(res)
            if out_dir and is_writer():
                atomic_write_text(
                    Path(out_dir) / "metrics.jsonl",
                    "".join(json.dumps({"phase": j, **rec}) + "\n" for j, r in enumerate(results) for rec in r.history),
                )
        return results


def _save_done(pdir: Path, rag, trains, res: StageResult) -> None:
    """A finished phase: its trained tensors and its result, so a resume skips it."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from fedrag.train.state import get_state

    with atomic_dir(pdir / "done") as tmp:
        save_file({n: t.contiguous() for n, t in get_state(rag, trains).items()}, str(tmp / "trained.safetensors"))
        (tmp / "result.json").write_text(json.dumps(asdict(res)))


def drop_resume_state(out_dir: str | Path) -> None:
    """Delete what only a resume needs (each finished phase's `done/` copy of its
    weights), once the run's outputs are saved."""
    import shutil

    for done in Path(out_dir).glob("phase*/done"):
        shutil.rmtree(done)


def _load_done(pdir: Path, rag) -> StageResult | None:
    done = pdir / "done"
    if not (done / "result.json").is_file():
        return None
    from safetensors.torch import load_file

    from fedrag.errors import FedragError
    from fedrag.train.state import set_state

    try:
        data = json.loads((done / "result.json").read_text())
        set_state(rag, load_file(str(done / "trained.safetensors")))
        return StageResult(**{**data, "cost": Cost(**data["cost"])})
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise FedragError(
            f"{done}: corrupt finished phase ({type(exc).__name__}: {str(exc)[:200]}); pass --overwrite to start afresh"
        ) from None


def total_cost(results: list[StageResult], name: str) -> dict:
    total = Cost(name=name)
    for r in results:
        total = total.add(r.cost)
    out = {"strategy": name, "total": total.to_dict(), "stages": [r.cost.to_dict() for r in results]}
    if any(r.best for r in results):  # TrainConfig.keep_best: the validated step each phase ended with
        out["best"] = [r.best for r in results]
    return out


def save_outputs(
    rag,
    out_dir: str | Path,
    results: list[StageResult],
    strategy_name: str,
    extra: dict | None = None,
    decoding: dict | None = None,
    plan: Strategy | None = None,
) -> None:
    """Write DIR/retriever, DIR/generator (adapter or full model, with the `decoding`
    that matches its training recorded in it, and a model card) and DIR/cost.json.
    `plan`: the strategy that trained them (the cards then say which model it trained; its
    decoding is recorded unless `decoding` is given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phases = [{"stage": r.stage, "steps": r.steps, "examples": r.cost.examples, "final_loss": r.final_loss} for r in results]
    save_models(rag, out, strategy_name, phases, plan=plan, decoding=decoding)
    atomic_write_json(out / "cost.json", {**total_cost(results, strategy_name), **(extra or {})})


def save_models(
    rag,
    out: Path,
    strategy_name: str,
    phases: list[dict],
    plan: Strategy | None = None,
    decoding: dict | None = None,
    federated: dict | None = None,
) -> None:
    """Write OUT/retriever and OUT/generator, each with its model card, and the decoding
    the generator must be read with (`plan`'s unless `decoding` is given); centrally
    trained and federated models are saved alike (`federated`: the card's rounds and sites)."""
    if decoding is None and plan is not None:
        decoding = plan.decoding
    rag.retriever.save(out / "retriever")
    write_model_card(
        out / "retriever",
        role="retriever",
        base=rag.retriever.name,
        strategy=strategy_name,
        phases=phases,
        trained=("retriever" in plan.trains) if plan else None,
        lora=rag.retriever.is_lora,
        federated=federated,
    )
    if rag.generator is not None:
        rag.generator.save(out / "generator")
        if decoding:
            save_decoding(out / "generator", decoding["decoding"], decoding.get("gamma", RETRIEVAL_GAMMA), strategy_name)
        write_model_card(
            out / "generator",
            role="generator",
            base=rag.generator.base_name,
            strategy=strategy_name,
            phases=phases,
            trained=("generator" in plan.trains) if plan else None,
            lora=rag.generator.is_lora,
            decoding=decoding["decoding"] if decoding else None,
            federated=federated,
        )
