"""A site's round, on its models: train the current phase's stage for one round, or
evaluate it, from the global tensors a message carries. Simulation runs it in the Ray
actor, a deployment in the site's resident worker (or, without one, in the ClientApp
process); [`fedrag.federation.site.client_app`][fedrag.federation.site.client_app] is the Flower side.

The site's questions, passages and knowledge store stay on the site; the message
carries only the stage's trainable tensors in and out, plus scalar metrics.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import torch

from fedrag.federation.wire.messages import EvaluateReport, RoundInstruction, TrainReport
from fedrag.federation.wire.tensors import from_record, from_wire, record_bytes, to_record, to_wire
from fedrag.federation.task import FedTask
from fedrag.train.state import get_state, set_state, trainable_parameters

# (the task, corpus, device, shared) -> the site's RAG system; the last two: a
# process serves one run at a time, and a whole-task key gives another run fresh models
_RAGS: OrderedDict = OrderedDict()
_KEEP = 2
# RAG systems this process has built, and rounds it has trained: a resident site worker
# builds one system and trains every round of a run; a process per message, one of each
_LOADS, _ROUNDS = [0], [0]


def _build_rag(task: FedTask, corpus: str, device: str, shared: bool):
    from fedrag.pipeline import build_training_rag
    from fedrag.retrieve.retriever import lora_default
    from fedrag.retrieve.search import resolve_refresh

    return build_training_rag(
        corpus,
        task.models.retriever,
        task.models.generator,
        task.models.lora,
        task.models.top_k,
        device,
        task.training.seed,
        retriever_lora=lora_default(task.models.retriever_lora, federated=True),
        shared_retriever=shared,
        dtype=task.training.dtype,
        index_refresh=resolve_refresh(task.models.index_refresh, federated=True),
    )


def site_rag(task: FedTask, corpus: str, device: str | None = None, shared: bool = False):
    """The site's RAG system (models + private store) on `device` (default the task's),
    cached per process; `shared`: one encoder for questions and passages (a plan that
    trains the passage side)."""
    key = (task, corpus, device or task.run.device, shared)
    if key not in _RAGS:
        _RAGS[key] = _build_rag(task, corpus, key[2], shared)
        _LOADS[0] += 1
        while len(_RAGS) > _KEEP:
            _RAGS.popitem(last=False)
    _RAGS.move_to_end(key)
    return _RAGS[key]


def _load_context(rag, instruction: RoundInstruction) -> None:
    """Frozen tensors from earlier phases (safetensors bytes in the ConfigRecord), if any."""
    if instruction.context is not None:
        from safetensors.torch import load

        set_state(rag, load(instruction.context))


def _layout(rag, stage) -> dict:
    """The phase's tensors (names, shapes, dtypes) that a message's packed arrays hold."""
    from fedrag.federation.wire.tensors import tensor_spec

    return tensor_spec(trainable_parameters(rag, stage.trains))


def train_round(
    task: FedTask,
    corpus: str,
    examples,
    arrays,
    config: RoundInstruction | dict,
    optimizer_state: dict | None = None,
    device: str | None = None,
    plan=None,
) -> tuple[dict, TrainReport]:
    """Run one client round: load global tensors, train `local_steps`, return tensors + report.

    `config`: the server's [`RoundInstruction`][fedrag.federation.wire.messages.RoundInstruction]
    (or its record's keys). `optimizer_state` (the site's AdamW moments from its previous
    round of this phase, updated in place) lets the site's optimizer continue rather than
    restart each round."""
    t_load = time.perf_counter()
    from fedrag.train import train_stage

    instruction = RoundInstruction.of(config)
    plan = plan or task.plan()
    phase = plan.phases[instruction.phase]
    stage = phase.stage
    # cached in a long-lived process (simulation), loaded per message otherwise
    rag = site_rag(task, corpus, device, plan.shared_retriever)
    _load_context(rag, instruction)
    state = from_wire(arrays, _layout(rag, stage))
    set_state(rag, state)
    rag.sync_store()  # global tensors that moved a shared encoder: the site's store follows, as centrally
    load_s = time.perf_counter() - t_load  # imports, models, store, the round's tensors
    # the round's settings, built once: the task's, the stage's defaults, the phase's overrides (as centrally)
    cfg = task.train_config(instruction.round, phase=phase, retriever_lora=rag.retriever.is_lora)
    t0 = time.perf_counter()
    fedprox = {"reference": state if instruction.mu else None, "prox_mu": instruction.mu}
    window = task.round_window(instruction.round)
    res = train_stage(stage, rag, examples, cfg, optimizer_state=optimizer_state, window=window, **fedprox)
    new = get_state(rag, stage.trains)
    _ROUNDS[0] += 1
    report = TrainReport(
        num_examples=res.cost.examples,
        train_loss=res.final_loss,
        client_wall_s=time.perf_counter() - t0,
        flops=res.cost.flops,
        generator_tokens=res.cost.generator_tokens,
        retriever_tokens=res.cost.retriever_tokens,
        bytes_received=record_bytes(arrays),
        threads=torch.get_num_threads(),
        load_s=load_s,
        model_loads=_LOADS[0],
        process_rounds=_ROUNDS[0],
        batch_size=res.cost.batch_size,  # the task's, or what --batch-size auto found on this site
    )
    return new, report


def evaluate_round(
    task: FedTask,
    corpus: str,
    examples,
    arrays,
    config: RoundInstruction | dict,
    limit: int = 16,
    device: str | None = None,
    plan=None,
) -> EvaluateReport:
    """Client-side evaluation on local examples: stage loss and Recall@5 (no training)."""
    from fedrag.evaluate import recall_at_k

    instruction = RoundInstruction.of(config)
    plan = plan or task.plan()
    stage = plan.phases[instruction.phase].stage
    rag = site_rag(task, corpus, device, plan.shared_retriever)
    _load_context(rag, instruction)
    set_state(rag, from_wire(arrays, _layout(rag, stage)))
    rag.sync_store()  # global tensors that moved a shared encoder: the site's store follows, as centrally
    sample = examples[:limit]
    with torch.no_grad():
        loss = float(stage.loss(rag, sample).loss)
    hits = rag.retrieve([e.question for e in sample], 5)
    recall = [recall_at_k([h.passage.id for h in hs], e.gold_ids, 5) for hs, e in zip(hits, sample) if e.gold_ids]
    return EvaluateReport(
        num_examples=len(sample),
        eval_loss=loss,
        phase=instruction.phase,
        recall_at_5=sum(recall) / len(recall) if recall else None,
    )


def train_message(task: FedTask, corpus: str, examples, arrays, config, optimizer_record=None, **kwargs):
    """[`train_round`][train_round] in a message's terms: the reply's packed ArrayRecord, the
    report (with the bytes sent), and the site's AdamW moments as an ArrayRecord
    (`optimizer_record`: the last round's, or an empty one; None when the site does not keep them)."""
    from dataclasses import replace

    moments = None if optimizer_record is None else from_record(optimizer_record)
    state, report = train_round(task, corpus, examples, arrays, config, optimizer_state=moments, **kwargs)
    reply = to_wire(state)
    return reply, replace(report, bytes_sent=record_bytes(reply)), (None if moments is None else to_record(moments))
