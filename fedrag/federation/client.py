"""The ClientApp: one site trains the current phase's stage for one round, locally.

The site's questions, passages and knowledge store stay on the site; the message
carries only the stage's trainable tensors in and out, plus scalar metrics.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import torch

from fedrag._env import apply_defaults
from fedrag.federation.records import from_record, from_wire, record_bytes, to_record, to_wire
from fedrag.federation.task import FedTask
from fedrag.train.state import get_state, set_state, trainable_parameters


@lru_cache(maxsize=2)
def _site_rag(task_key: tuple, corpus: str, device: str, shared: bool):
    from fedrag.pipeline import build_training_rag

    task = FedTask(**dict(task_key))
    return build_training_rag(
        corpus,
        task.retriever,
        task.generator,
        task.lora,
        task.top_k,
        device,
        task.seed,
        retriever_lora=task.retriever_lora,
        shared_retriever=shared,
        dtype=task.dtype,
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
    cfg = phase.config(task.train_config(rnd, mu), federated=True)  # the phase's overrides, as centrally
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


def resident_key(socket_path: str) -> bytes:
    """The key a site's ClientApp processes and its resident worker share: the file `key`
    next to the worker's socket, in a folder only the site's user can enter."""
    from fedrag.errors import FedragError

    path = Path(socket_path).parent / "key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise FedragError(f"the site's resident worker key {path} cannot be read ({exc})") from None


def run_resident(socket_path: str, op: str, **kwargs):
    """Run `op` ("train" or "evaluate") with `kwargs` in the site's resident worker
    ([`fedrag.federation.resident`][fedrag.federation.resident]); its result, or its failure as one line."""
    import pickle
    from multiprocessing.connection import Client

    from fedrag.errors import FedragError

    deadline = time.time() + 120  # a worker started with its SuperNode may still be importing
    while True:
        try:
            conn = Client(socket_path, family="AF_UNIX", authkey=resident_key(socket_path))
            break
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if time.time() > deadline:
                raise FedragError(
                    f"the site's resident worker at {socket_path} is not reachable ({exc}); restart the site"
                ) from None
            time.sleep(0.5)
        except (OSError, EOFError) as exc:
            raise FedragError(f"the site's resident worker at {socket_path} is not reachable ({exc}); restart the site") from None
    with conn:
        # plain pickle, by value: Connection.send's ForkingPickler would pass torch tensors as
        # shared-memory handles, which only a parent and its child can exchange
        conn.send_bytes(pickle.dumps((op, kwargs)))
        try:
            ok, value = pickle.loads(conn.recv_bytes())
        except EOFError:
            raise FedragError(f"the site's resident worker at {socket_path} died during the {op} round") from None
    if not ok:
        raise FedragError(value)
    return value


def _optimizer_key(phase: int) -> str:
    """Where a site keeps its AdamW moments for `phase` in the node's `context.state`
    (Flower keeps it on the site between rounds, in simulation and deployment alike; it
    never enters a message). A new phase finds no key and starts fresh."""
    return f"fedrag.optimizer.phase-{phase}"


def _process_start() -> float:
    """When this process started (epoch seconds, from Linux /proc; 0 elsewhere)."""
    import os

    try:  # the system's uptime now and at this process's start (10 ms ticks; /proc/stat's boot time is whole seconds)
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _arrival(msg) -> dict:
    """Where a message's time went before its handler ran. `dispatch-s`: from the server
    creating it to this process starting (Flower's polling and the ClientApp process
    launch) or, in a process that was already running (simulation), to the handler
    (queueing); `startup-s`: this process's start-up before the handler (imports,
    installing the app, pulling the message), 0 when the process predates the message.
    Loopback-exact; across hosts it includes their clock offset."""
    now, created, born = time.time(), msg.metadata.created_at, _process_start()
    spawned = born >= created > 0
    return {
        "dispatch-s": max(0.0, (born if spawned else now) - created) if created > 0 else 0.0,
        "startup-s": now - born if spawned else 0.0,
    }


def make_client_app(task: FedTask | None, site_data, policy=None, mods=(), plan=None):
    """A Flower ClientApp. `task=None` reads the task from `context.run_config`;
    `site_data(context) -> (corpus_path, examples)` gives this site's private data;
    `policy(context) -> SitePolicy` the models the site loads (default: the node
    config's `allow-models`, else the bundled models only); `mods`: extra Flower
    client mods, run outside fedrag's DP clipping mod; `plan`: a Strategy object to
    run (simulation: any composition of stage objects, captured as is), else the task's."""
    from fedrag.federation.policy import SitePolicy

    policy = policy or (lambda context: SitePolicy.from_node_config(context.node_config))
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod

    def dp_clipping(msg, context, call_next):
        """Flower's client-side fixed clipping, active only when the server asks for it."""
        cfg = msg.content.config_records.get("config")
        if cfg is not None and "clipping_norm" in cfg:
            return fixedclipping_mod(msg, context, call_next)
        return call_next(msg, context)

    def _task(context) -> FedTask:
        apply_defaults()  # a site's process is an entry point: Ray workers do not inherit the launcher's filters
        t = task or FedTask.from_config(context.run_config)
        site = policy(context)
        site.check(retriever=t.retriever, generator=t.generator)
        if plan is None:
            site.check_strategy(t.strategy)
        return t

    from fedrag.federation.local_dp import make_local_dp_mod
    from fedrag.federation.secagg import make_secagg_mod

    # innermost first: central-DP clipping, then local DP's noise, then secure aggregation's masks
    app = ClientApp(mods=[*mods, make_secagg_mod(), make_local_dp_mod(_task, site_data), dp_clipping])

    @app.train()
    def train(msg: Message, context) -> Message:
        arrival, t_enter = _arrival(msg), time.perf_counter()
        t = _task(context)  # the site's policy first: nothing loads before it
        corpus, examples = site_data(context)
        arrival["prepare-s"] = time.perf_counter() - t_enter  # policy check, plan import, the site's data
        config = msg.content["config"]
        key = _optimizer_key(int(config["phase"]))
        moments = (from_record(context.state[key]) if key in context.state else {}) if t.keep_optimizer else None
        kwargs = dict(
            task=t,
            corpus=corpus,
            examples=examples,
            arrays=msg.content["arrays"],
            config=config,
            optimizer_state=moments,
            device=context.node_config.get("device"),
            plan=plan,
        )
        if context.node_config.get("resident"):  # the site's models stay loaded in its worker
            state, metrics, moments = run_resident(str(context.node_config["resident"]), "train", **kwargs)
        else:
            state, metrics = train_round(**kwargs)
        if moments is not None:
            for old in [k for k in context.state if k.startswith("fedrag.optimizer.") and k != key]:
                del context.state[old]  # an earlier phase's moments are done with
            context.state[key] = to_record(moments)
        reply = to_wire(state)
        metrics["bytes-sent"] = record_bytes(reply)
        metrics.update(arrival)
        return Message(RecordDict({"arrays": reply, "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context) -> Message:
        t = _task(context)
        corpus, examples = site_data(context)
        kwargs = dict(
            task=t,
            corpus=corpus,
            examples=examples,
            arrays=msg.content["arrays"],
            config=msg.content["config"],
            device=context.node_config.get("device"),
            plan=plan,
        )
        worker = context.node_config.get("resident")
        metrics = run_resident(str(worker), "evaluate", **kwargs) if worker else evaluate_round(**kwargs)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
