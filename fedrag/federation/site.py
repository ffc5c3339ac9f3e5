"""A site's round, on its models: train the current phase's stage for one round, or
evaluate it, from the global tensors a message carries. Simulation runs it in the Ray
actor, a deployment in the site's resident worker (or, without one, in the ClientApp
process); [`fedrag.federation.client`][fedrag.federation.client] is the Flower side.

The site's questions, passages and knowledge store stay on the site; the message
carries only the stage's trainable tensors in and out, plus scalar metrics.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch

from fedrag.federation.records import from_record, from_wire, record_bytes, to_record, to_wire
from fedrag.federation.task import FedTask
from fedrag.train.state import get_state, set_state, trainable_parameters


@lru_cache(maxsize=2)
def _site_rag(task_key: tuple, corpus: str, device: str, shared: bool):
    from fedrag.pipeline import build_training_rag
    from fedrag.retrieve.retriever import lora_default
    from fedrag.retrieve.search import resolve_refresh

    task = FedTask(**dict(task_key))
    return build_training_rag(
        corpus,
        task.retriever,
        task.generator,
        task.lora,
        task.top_k,
        device,
        task.seed,
        retriever_lora=lora_default(task.retriever_lora, federated=True),
        shared_retriever=shared,
        dtype=task.dtype,
        index_refresh=resolve_refresh(task.index_refresh, federated=True),
    )


def site_rag(task: FedTask, corpus: str, device: str | None = None, shared: bool = False):
    """The site's RAG system (models + private store) on `device` (default the task's),
    cached per process; `shared`: one encoder for questions and passages (a plan that
    trains the passage side)."""
    return _site_rag(tuple(sorted(task.to_config().items())), corpus, device or task.device, shared)


def _load_context(rag, config) -> None:
    """Frozen tensors from earlier phases (safetensors bytes in the ConfigRecord), if any."""
    if "context" in config:
        from safetensors.torch import load

        set_state(rag, load(bytes(config["context"])))


def _layout(rag, stage) -> dict:
    """The phase's tensors (names, shapes, dtypes) that a message's packed arrays hold."""
    from fedrag.federation.audit import tensor_spec

    return tensor_spec(trainable_parameters(rag, stage.trains))


def train_round(
    task: FedTask,
    corpus: str,
    examples,
    arrays,
    config,
    optimizer_state: dict | None = None,
    device: str | None = None,
    plan=None,
) -> tuple[dict, dict]:
    """Run one client round: load global tensors, train `local_steps`, return tensors + metrics.

    `optimizer_state` (the site's AdamW moments from its previous round of this phase,
    updated in place) lets the site's optimizer continue rather than restart each round."""
    t_load = time.perf_counter()
    from fedrag.train import train_stage

    phase_idx = int(config["phase"])
    rnd = int(config.get("round-offset", 0)) + int(config["server-round"])
    plan = plan or task.plan()
    phase = plan.phases[phase_idx]
    stage = phase.stage
    # cached in a long-lived process (simulation), loaded per message otherwise
    rag = site_rag(task, corpus, device, plan.shared_retriever)
    _load_context(rag, config)
    state = from_wire(arrays, _layout(rag, stage))
    set_state(rag, state)
    rag.sync_store()  # global tensors that moved a shared encoder: the site's store follows, as centrally
    load_s = time.perf_counter() - t_load  # imports, models, store, the round's tensors
    mu = float(config.get("proximal-mu", 0.0))
    cfg = phase.config(task.train_config(rnd, mu), True, rag.retriever.is_lora)  # the phase's overrides, as centrally
    t0 = time.perf_counter()
    res = train_stage(stage, rag, examples, cfg, reference=state if mu else None, optimizer_state=optimizer_state)
    new = get_state(rag, stage.trains)
    metrics = {
        "num-examples": res.cost.examples,
        "train-loss": res.final_loss,
        "client-wall-s": time.perf_counter() - t0,
        "flops": res.cost.flops,
        "generator-tokens": res.cost.generator_tokens,
        "retriever-tokens": res.cost.retriever_tokens,
        "bytes-received": record_bytes(arrays),
        "threads": torch.get_num_threads(),
        "load-s": load_s,
        "batch-size": res.cost.batch_size,  # the task's, or what --batch-size auto found on this site
    }
    return new, metrics


def evaluate_round(
    task: FedTask, corpus: str, examples, arrays, config, limit: int = 16, device: str | None = None, plan=None
) -> dict:
    """Client-side evaluation on local examples: stage loss and Recall@5 (no training)."""
    from fedrag.evaluate import recall_at_k

    phase = int(config["phase"])
    plan = plan or task.plan()
    stage = plan.phases[phase].stage
    rag = site_rag(task, corpus, device, plan.shared_retriever)
    _load_context(rag, config)
    set_state(rag, from_wire(arrays, _layout(rag, stage)))
    rag.sync_store()  # global tensors that moved a shared encoder: the site's store follows, as centrally
    sample = examples[:limit]
    with torch.no_grad():
        loss = float(stage.loss(rag, sample).loss)
    hits = rag.retrieve([e.question for e in sample], 5)
    recall = [recall_at_k([h.passage.id for h in hs], e.gold_ids, 5) for hs, e in zip(hits, sample) if e.gold_ids]
    out = {"num-examples": len(sample), "eval-loss": loss, "phase": phase}
    if recall:
        out["recall@5"] = sum(recall) / len(recall)
    return out


def train_message(task: FedTask, corpus: str, examples, arrays, config, optimizer_record=None, **kwargs):
    """[`train_round`][train_round] in a message's terms: the reply's packed ArrayRecord, the
    metrics, and the site's AdamW moments as an ArrayRecord (`optimizer_record`: the last
    round's, or an empty one; None when the site does not keep them)."""
    moments = None if optimizer_record is None else from_record(optimizer_record)
    state, metrics = train_round(task, corpus, examples, arrays, config, optimizer_state=moments, **kwargs)
    reply = to_wire(state)
    metrics["bytes-sent"] = record_bytes(reply)
    return reply, metrics, (None if moments is None else to_record(moments))
