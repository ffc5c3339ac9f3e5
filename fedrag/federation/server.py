"""The ServerApp: runs a strategy's phases as consecutive federated phases.

Per phase: the stage's trainable tensors are sent, sites train one round each, the
aggregator (FedAvg / FedProx / FedAdam / FedYogi, optionally wrapped in Flower's
central DP) combines them. After each round the global tensors are checkpointed
atomically (safetensors) so a killed server resumes with no round lost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedrag import __version__
from fedrag._io import atomic_write_json, atomic_write_text
from fedrag.federation.aggregator import make_accountant, make_aggregator
from fedrag.federation.audit import RESUME_HINT, AuditedGrid, tensor_spec
from fedrag.federation.checkpoint import load_checkpoint, save_checkpoint
from fedrag.federation.policy import VERSION_KEY
from fedrag.federation.privacy import privacy_markdown, privacy_sections
from fedrag.federation.records import from_wire, packed_spec, to_wire
from fedrag.federation.run_summary import run_summary
from fedrag.federation.task import FedTask
from fedrag.retrieve.retriever import lora_default
from fedrag.train.tracking import Tracker


def _server_model(task: FedTask, shared: bool = False):
    """Retriever + generator on the server: source of initial tensors, target of the final
    save (`shared`: one encoder for both sides, saved as such)."""
    from types import SimpleNamespace

    from fedrag.generate import Generator
    from fedrag.generate.generator import training_weights_dtype
    from fedrag.retrieve import Retriever

    ret = Retriever.load(task.retriever, device=task.device, lora=lora_default(task.retriever_lora, True), shared=shared)
    gen = (
        None
        if task.generator == "none"
        else Generator.load(
            task.generator,
            device=task.device,
            lora=task.lora,
            trainable=True,
            seed=task.seed,
            dtype=training_weights_dtype(task.dtype, task.lora),
        )
    )
    return SimpleNamespace(retriever=ret, generator=gen)


ERROR_FILE = "error.json"


def raise_recorded_error(task: FedTask) -> None:
    """Raise the ServerApp's failure (written to OUT/error.json) in the launching process."""
    from fedrag.errors import FedragError

    path = Path(task.out) / ERROR_FILE
    if path.is_file():
        raise FedragError(json.loads(path.read_text())["error"])


def run_server(grid, task: FedTask, plan=None) -> dict:
    """[`serve`][serve], with a failure recorded in `OUT/error.json` for the launcher
    (the ServerApp runs in another thread or process than the CLI)."""
    from fedrag.errors import FedragError

    out = Path(task.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)
    try:
        return serve(grid, task, plan)
    except FedragError as exc:
        atomic_write_json(out / ERROR_FILE, {"error": str(exc)})
        raise


def serve(grid, task: FedTask, plan=None) -> dict:
    """The ServerApp body: every phase of `plan` (default the task's), every round,
    checkpoints, rounds.json, final models."""
    import torch
    from flwr.app import ConfigRecord, MetricRecord

    from fedrag.errors import FedragError
    from fedrag.federation.recorder import RoundRecorder
    from fedrag.strategies.base import save_models
    from fedrag.train import get_state, set_state

    out = Path(task.out)
    plan = plan or task.plan()
    rag = _server_model(task, plan.shared_retriever)
    start_phase, rounds_done, history, dp_state = load_checkpoint(out, rag, task, len(plan.phases))
    (out / "cost.json").unlink(missing_ok=True)  # this run trains: an older summary no longer describes OUT
    accountant = make_accountant(task, dp_state)
    evaluator = _server_evaluator(task, rag)
    tracker = Tracker(task.report_to, out / "tracking", f"{out.name}/federated", task.to_config())
    t_run = time.perf_counter()
    for phase_idx in range(start_phase, len(plan.phases)):
        stage = plan.phases[phase_idx].stage
        done = rounds_done if phase_idx == start_phase else 0
        if done >= task.rounds:
            continue
        audit: list = []
        client_metrics: dict = {}
        initial = get_state(rag, stage.trains)

        def quorum(server_round: int, got: int, phase_idx=phase_idx, done=done, audit=audit):
            if got >= task.min_sites:
                return
            last = audit[-1] if audit else {}  # Flower would keep the old arrays: this round trained nothing
            reasons = "; ".join(
                last.get("failure_reasons", []) + [f"rejected by the audit: {r}" for r in last.get("rejected_reasons", [])]
            )
            raise FedragError(
                f"phase {phase_idx} round {done + server_round}: {got} of {task.min_sites} required sites "
                f"replied within {task.round_timeout:.0f}s"
                + (f" (site errors: {reasons})" if reasons else "")
                + f"; {RESUME_HINT}"
            )

        layout = tensor_spec(initial)  # the phase's tensors; messages carry them packed
        strategy = RoundRecorder(
            make_aggregator(task, accountant),
            task,
            done,
            client_metrics,
            {k: getattr(torch, d) for k, (_, d) in packed_spec(layout).items()},
            quorum,
        )
        t_round = [time.perf_counter()]

        def on_round(
            server_round: int,
            arrays,
            phase_idx=phase_idx,
            done=done,
            audit=audit,
            t_round=t_round,
            stage=stage,
            client_metrics=client_metrics,
            layout=layout,
        ):
            if server_round == 0:
                return None
            set_state(rag, from_wire(arrays, layout))
            entry = {
                "phase": phase_idx,
                "stage": stage.name,
                "round": done + server_round,
                "seconds": time.perf_counter() - t_round[0],
                **(audit[-1] if audit else {}),
                **client_metrics.pop(server_round, {}),
            }
            metrics = evaluator(rag) if evaluator else {}
            entry.update({f"server_{k}": v for k, v in metrics.items()})
            if accountant is not None:  # cumulative over every phase and round so far (model updates only)
                spent = accountant.get_privacy_spent()
                entry.update(dp_epsilon=float(spent.epsilon), dp_delta=float(spent.delta), dp_releases=spent.num_releases)
            history.append(entry)
            save_checkpoint(out, rag, phase_idx, done + server_round, history, task, accountant)
            tracker.log(
                {
                    **{k: v for k, v in entry.items() if k != "round"},
                    **{f"site/{node}/{k}": v for node, m in entry.get("site_metrics", {}).items() for k, v in m.items()},
                },
                len(history),
            )
            _progress(entry, task, len(plan.phases))
            atomic_write_json(out / "rounds.json", history)
            t_round[0] = time.perf_counter()
            return MetricRecord({k: float(v) for k, v in metrics.items()}) if metrics else None

        config = {"phase": phase_idx, "round-offset": done, VERSION_KEY: __version__}  # a site checks the version
        context = phase_context(plan, phase_idx, rag)
        if context is not None:
            config["context"] = context
        exchange = None
        if task.secagg:  # the sites' updates masked: the strategy sees only their decoded aggregate
            from fedrag.federation.secagg import SecureAggregation

            cfg = plan.phases[phase_idx].config(task.train_config(), True, lora_default(task.retriever_lora, True))
            exchange = SecureAggregation(task, max_weight=task.local_steps * cfg.batch_size * cfg.grad_accum)
        strategy.start(
            grid=AuditedGrid(grid, audit, layout, task.min_sites, task.round_timeout, exchange=exchange),
            initial_arrays=to_wire(initial),
            num_rounds=task.rounds - done,
            timeout=task.round_timeout,
            train_config=ConfigRecord(config),
            evaluate_config=ConfigRecord(config),
            evaluate_fn=on_round,
        )
        save_checkpoint(out, rag, phase_idx + 1, 0, history, task, accountant)
        atomic_write_json(out / "rounds.json", history)
    tracker.close()
    phases = [{"stage": p.name, "steps": task.rounds * task.local_steps, "examples": "-"} for p in plan.phases]
    fed = {"sites": task.min_sites, "rounds": task.rounds, "local_steps": task.local_steps, "aggregator": task.aggregator}
    save_models(rag, out, plan.name, phases, plan=plan, federated=fed)  # decoded as it was trained, as centrally
    summary = run_summary(history, time.perf_counter() - t_run, task, plan)
    summary.update(privacy_sections(history, task, accountant))
    atomic_write_json(out / "cost.json", summary)
    atomic_write_text(out / "privacy.md", privacy_markdown(summary))
    return summary


def _progress(entry: dict, task: FedTask, phases: int) -> None:
    """One line per round on stderr: where the run is and what the sites reported."""
    import sys

    loss = entry.get("clients_train-loss")
    parts = [
        f"phase {entry['phase'] + 1}/{phases} ({entry['stage']})",
        f"round {entry['round']}/{task.rounds}",
        f"{entry.get('replies', 0)} replies" + (f", {entry['rejected']} rejected" if entry.get("rejected") else ""),
        f"site loss {loss:.4f}" if loss is not None else "",
        f"{entry['seconds']:.0f}s",
        f"eps {entry['dp_epsilon']:.2f}" if "dp_epsilon" in entry else "",
    ]
    print("fedrag: " + ", ".join(p for p in parts if p), file=sys.stderr, flush=True)


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


def _server_evaluator(task: FedTask, rag):
    """Server-side held-out evaluation (EM/F1/Recall@5) when `eval_corpus`/`eval_qa` are set."""
    if not task.eval_qa:
        return None
    from fedrag.data import load_qa
    from fedrag.evaluate import evaluate
    from fedrag.pipeline import load_store
    from fedrag.rag import RAGSystem
    from fedrag.retrieve.search import Searcher, resolve_refresh

    examples = load_qa(task.eval_qa, limit=task.eval_limit)
    store = load_store(task.eval_corpus, rag.retriever)
    current = [store]  # re-embedded at most once per round, only when the encoder moved

    def fn(model):
        searcher = Searcher(current[0], model.retriever, refresh=resolve_refresh(task.index_refresh, federated=True))
        system = RAGSystem(searcher, model.generator, top_k=task.top_k)
        system.sync_store()  # a shared encoder the round moved: score against passages it embedded
        current[0] = system.store
        m = evaluate(system, examples, progress=False)
        return {k: m[k] for k in ("em", "f1", "recall@5", "mrr@10") if k in m}

    return fn


def make_server_app(task: FedTask | None = None, plan=None):
    """A Flower ServerApp; `task=None` reads the task from `context.run_config`;
    `plan`: a Strategy object to run instead of the task's."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        run_server(grid, task or FedTask.from_config(context.run_config), plan)

    return app
