"""The server's run as objects: [`ServerRun`][ServerRun] holds what lasts the whole run (the
global model, the checkpointed history, the DP accountant, the tracker) and runs the plan's
phases in order; [`PhaseRun`][PhaseRun] is one phase's rounds under Flower's strategy,
with the quorum check and the per-round bookkeeping Flower calls back into.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fedrag import __version__
from fedrag._io import atomic_write_json
from fedrag.federation.server.message_audit import RESUME_HINT, AuditedGrid
from fedrag.federation.server.round_checkpoint import load_checkpoint, save_checkpoint
from fedrag.federation.wire.messages import RoundInstruction
from fedrag.federation.wire.tensors import tensor_spec
from fedrag.federation.task import FedTask
from fedrag.retrieve.retriever import lora_default


# set by a launcher whose run was interrupted (Ctrl-C, SIGTERM): the server publishes nothing
# more, not even a round that finishes while the launcher stops the sites
STOP = threading.Event()


def _halt_if_stopped() -> None:
    if STOP.is_set():
        raise RuntimeError("the run was interrupted: the server stops")


class ServerRun:
    """One federated run on the server: `run()` trains every phase of `plan` not yet done
    (a resumed run starts at its checkpoint) and returns the cost summary."""

    def __init__(self, grid, task: FedTask, plan):
        from fedrag.federation.server.aggregator import make_accountant
        from fedrag.train.tracking import Tracker

        _halt_if_stopped()  # a launcher that gave up before this thread began
        self.grid, self.task, self.plan = grid, task, plan
        self.out = Path(task.run.out)
        self.rag = _server_model(task, plan.shared_retriever)
        _halt_if_stopped()  # the launcher gave up while the models loaded: OUT is left as it was
        self.start_phase, self.rounds_done, self.history, dp_state = load_checkpoint(self.out, self.rag, task, len(plan.phases))
        (self.out / "cost.json").unlink(missing_ok=True)  # this run trains: an older summary no longer describes OUT
        self.accountant = make_accountant(task, dp_state)
        self.evaluator = _server_evaluator(task, self.rag)
        self.tracker = Tracker(task.run.report_to, self.out / "tracking", f"{self.out.name}/federated", task.to_config())

    def run(self) -> dict:
        t_run = time.perf_counter()
        for idx in range(self.start_phase, len(self.plan.phases)):
            done = self.rounds_done if idx == self.start_phase else 0
            if done < self.task.training.rounds:
                PhaseRun(self, idx, done).run()
        self.tracker.close()
        return self.finish(time.perf_counter() - t_run)

    def checkpoint(self, phase_idx: int, rounds_done: int) -> None:
        save_checkpoint(self.out, self.rag, phase_idx, rounds_done, self.history, self.task, self.accountant)

    def finish(self, seconds: float) -> dict:
        """The final models, cost.json and privacy.md: the run's summary."""
        from fedrag._io import atomic_write_text
        from fedrag.federation.privacy.coverage import privacy_markdown, privacy_sections
        from fedrag.federation.server.cost_report import run_summary
        from fedrag.strategies.base import save_models

        _halt_if_stopped()
        task, plan = self.task, self.plan
        phases = [
            {"stage": p.name, "steps": task.training.rounds * task.training.local_steps, "examples": "-"} for p in plan.phases
        ]
        fed = {
            "sites": task.aggregation.min_sites,
            "rounds": task.training.rounds,
            "local_steps": task.training.local_steps,
            "aggregator": task.aggregation.aggregator,
        }
        save_models(self.rag, self.out, plan.name, phases, plan=plan, federated=fed)  # decoded as trained, as centrally
        summary = run_summary(self.history, seconds, task, plan)
        summary.update(privacy_sections(self.history, task, self.accountant))
        atomic_write_json(self.out / "cost.json", summary)
        atomic_write_text(self.out / "privacy.md", privacy_markdown(summary))
        return summary


class PhaseRun:
    """Phase `idx`'s remaining rounds (`done` already checkpointed): the stage's trainable
    tensors go out, Flower's strategy (wrapped in the round recorder) runs the rounds, and
    [`on_round`][fedrag.federation.server.run_loop.PhaseRun.on_round] records each one."""

    def __init__(self, run: ServerRun, idx: int, done: int):
        from fedrag.train import get_state

        self.run_, self.task, self.idx, self.done = run, run.task, idx, done
        self.phase = run.plan.phases[idx]
        self.audit: list = []  # the audited grid's figures, one entry per training round
        self.site_metrics: dict = {}  # {server round: the sites' aggregated and own metrics}
        self.initial = get_state(run.rag, self.phase.stage.trains)
        self.layout = tensor_spec(self.initial)  # the phase's tensors; messages carry them packed
        self.t_round = time.perf_counter()

    def instruction(self) -> RoundInstruction:
        """What the server asks every site this phase (Flower adds the round's number)."""
        context = phase_context(self.run_.plan, self.idx, self.run_.rag)
        return RoundInstruction(self.idx, self.done, context, fedrag_version=__version__)

    def quorum(self, server_round: int, got: int) -> None:
        """End the run when fewer than `min_sites` sites replied usably to a round."""
        from fedrag.errors import FedragError

        task = self.task
        if got >= task.aggregation.min_sites:
            return
        last = self.audit[-1] if self.audit else {}  # Flower would keep the old arrays: this round trained nothing
        reasons = "; ".join(
            last.get("failure_reasons", []) + [f"rejected by the audit: {r}" for r in last.get("rejected_reasons", [])]
        )
        raise FedragError(
            f"phase {self.idx} round {self.done + server_round}: {got} of {task.aggregation.min_sites} required sites "
            f"replied within {task.aggregation.round_timeout:.0f}s"
            + (f" (site errors: {reasons})" if reasons else "")
            + f"; {RESUME_HINT}"
        )

    def on_round(self, server_round: int, arrays):
        """Flower's `evaluate_fn`: after round `server_round`, the new global tensors are
        evaluated, recorded, checkpointed and reported (round 0: the initial ones, skipped)."""
        from flwr.app import MetricRecord

        from fedrag.federation.wire.tensors import from_wire
        from fedrag.train import set_state

        if server_round == 0:
            return None
        _halt_if_stopped()
        run = self.run_
        set_state(run.rag, from_wire(arrays, self.layout))
        entry = {
            "phase": self.idx,
            "stage": self.phase.stage.name,
            "round": self.done + server_round,
            "seconds": time.perf_counter() - self.t_round,
            **(self.audit[-1] if self.audit else {}),
            **self.site_metrics.pop(server_round, {}),
        }
        metrics = run.evaluator(run.rag) if run.evaluator else {}
        entry.update({f"server_{k}": v for k, v in metrics.items()})
        if run.accountant is not None:  # cumulative over every phase and round so far (model updates only)
            spent = run.accountant.get_privacy_spent()
            entry.update(dp_epsilon=float(spent.epsilon), dp_delta=float(spent.delta), dp_releases=spent.num_releases)
        run.history.append(entry)
        run.checkpoint(self.idx, self.done + server_round)
        sites = {f"site/{node}/{k}": v for node, m in entry.get("site_metrics", {}).items() for k, v in m.items()}
        run.tracker.log({**{k: v for k, v in entry.items() if k != "round"}, **sites}, len(run.history))
        _progress(entry, self.task, len(run.plan.phases))
        atomic_write_json(run.out / "rounds.json", run.history)
        self.t_round = time.perf_counter()
        return MetricRecord({k: float(v) for k, v in metrics.items()}) if metrics else None

    def _exchange(self):
        """Secure aggregation's exchange when the task asks for it: the strategy then sees
        only the sites' decoded aggregate."""
        if not self.task.privacy.secagg:
            return None
        from fedrag.federation.privacy.secagg import SecureAggregation

        cfg = self.task.train_config(phase=self.phase, retriever_lora=lora_default(self.task.models.retriever_lora, True))
        return SecureAggregation(self.task, max_weight=self.task.training.local_steps * cfg.batch_size * cfg.grad_accum)

    def run(self) -> None:
        import torch

        from fedrag.federation.server.aggregator import make_aggregator
        from fedrag.federation.server.round_recorder import RoundRecorder
        from fedrag.federation.wire.tensors import packed_spec, to_wire

        task, run = self.task, self.run_
        dtypes = {k: getattr(torch, d) for k, (_, d) in packed_spec(self.layout).items()}
        aggregator = make_aggregator(task, run.accountant, record=self.site_metrics)  # each release's sites and noise
        strategy = RoundRecorder(aggregator, task, self.done, self.site_metrics, dtypes, self.quorum)
        instruction = self.instruction()
        strategy.start(
            grid=AuditedGrid(
                run.grid,
                self.audit,
                self.layout,
                task.aggregation.min_sites,
                task.aggregation.round_timeout,
                exchange=self._exchange(),
                halt=_halt_if_stopped,
            ),
            initial_arrays=to_wire(self.initial),
            num_rounds=task.training.rounds - self.done,
            timeout=task.aggregation.round_timeout,
            train_config=instruction.to_record(),  # one record each: Flower's strategies add their keys to it
            evaluate_config=instruction.to_record(),
            evaluate_fn=self.on_round,
        )
        run.checkpoint(self.idx + 1, 0)
        atomic_write_json(run.out / "rounds.json", run.history)


def _server_model(task: FedTask, shared: bool = False):
    """Retriever + generator on the server: source of initial tensors, target of the final
    save (`shared`: one encoder for both sides, saved as such)."""
    from types import SimpleNamespace

    from fedrag.generate import Generator
    from fedrag.generate.generator import training_weights_dtype
    from fedrag.retrieve import Retriever

    ret = Retriever.load(
        task.models.retriever, device=task.run.device, lora=lora_default(task.models.retriever_lora, True), shared=shared
    )
    gen = (
        None
        if task.models.generator == "none"
        else Generator.load(
            task.models.generator,
            device=task.run.device,
            lora=task.models.lora,
            trainable=True,
            seed=task.training.seed,
            dtype=training_weights_dtype(task.training.dtype, task.models.lora),
        )
    )
    return SimpleNamespace(retriever=ret, generator=gen)


def _server_evaluator(task: FedTask, rag):
    """Server-side held-out evaluation (EM/F1/Recall@5) when `eval_corpus`/`eval_qa` are set."""
    if not task.run.eval_qa:
        return None
    from fedrag.data import load_qa
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import load_store
    from fedrag.rag import RAGSystem
    from fedrag.retrieve.search import Searcher, resolve_refresh

    examples = load_qa(task.run.eval_qa, limit=task.run.eval_limit)
    store = load_store(task.run.eval_corpus, rag.retriever)
    current = [store]  # re-embedded at most once per round, only when the encoder moved

    def fn(model):
        searcher = Searcher(current[0], model.retriever, refresh=resolve_refresh(task.models.index_refresh, federated=True))
        system = RAGSystem(searcher, model.generator, top_k=task.models.top_k)
        system.sync_store()  # a shared encoder the round moved: score against passages it embedded
        current[0] = system.store
        m = evaluate(system, examples, progress=False)
        return {k: m[k] for k in ("em", "f1", "recall@5", "mrr@10") if k in m}

    return fn


def phase_context(plan, phase_idx: int, rag) -> bytes | None:
    """Tensors that earlier phases trained and this phase keeps frozen (e.g. the tuned
    LoRA adapter during RA-DIT's LSR phase), as safetensors bytes for the ConfigRecord.

    Sites need them to compute this phase's loss with the *global* model; they are
    not trained or sent back, so the ArrayRecord stays the phase's trainable tensors."""
    from safetensors.torch import save

    from fedrag.train import get_state

    earlier = {side for p in plan.phases[:phase_idx] for side in p.stage.trains} - set(plan.phases[phase_idx].stage.trains)
    if not earlier or (earlier == {"generator"} and rag.generator is None):
        return None
    return save({n: t.contiguous() for n, t in get_state(rag, tuple(sorted(earlier))).items()})


def _progress(entry: dict, task: FedTask, phases: int) -> None:
    """One line per round on stderr: where the run is and what the sites reported."""
    import sys

    loss = entry.get("clients_train-loss")
    parts = [
        f"phase {entry['phase'] + 1}/{phases} ({entry['stage']})",
        f"round {entry['round']}/{task.training.rounds}",
        f"{entry.get('replies', 0)} replies" + (f", {entry['rejected']} rejected" if entry.get("rejected") else ""),
        f"site loss {loss:.4f}" if loss is not None else "",
        f"{entry['seconds']:.0f}s",
        f"eps {entry['dp_epsilon']:.2f}" if "dp_epsilon" in entry else "",
    ]
    print("fedrag: " + ", ".join(p for p in parts if p), file=sys.stderr, flush=True)
