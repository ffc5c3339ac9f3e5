"""The ClientApp: the Flower side of a site. It checks the site's policy, then has the
round run on the site's models ([`fedrag.federation.site.local_round`][fedrag.federation.site.local_round]): in its
resident worker when the node config names one, else here.

This module imports neither torch nor the models: in deployment Flower starts a ClientApp
process for every message (four a round under secure aggregation), and with a resident
worker the process only checks, forwards and replies.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from fedrag._env import apply_defaults
from fedrag.federation.wire.messages import ARRAYS, CONFIG, METRICS, RoundInstruction
from fedrag.federation.task import FedTask

_PARSED: list = []  # [(run config, FedTask)]: the last run config this process parsed


def run_task(run_config) -> FedTask:
    """The run's task from its Flower run config, parsed once per run config in a process:
    a message's local-DP mod, its handler and its data lookup all ask for it."""
    if not (_PARSED and _PARSED[0][0] == run_config):
        _PARSED[:] = [(dict(run_config), FedTask.from_config(run_config))]
    return _PARSED[0][1]


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
    ([`fedrag.federation.site.resident_worker`][fedrag.federation.site.resident_worker]); its result, or its failure as one line."""
    import pickle
    from multiprocessing.connection import Client

    from fedrag.errors import FedragError

    deadline = time.time() + 120  # a worker started with its SuperNode may still be importing: no socket yet
    while True:
        try:
            conn = Client(socket_path, family="AF_UNIX", authkey=resident_key(socket_path))
            break
        except ConnectionRefusedError as exc:  # a worker's socket appears as it listens: this one has died
            raise FedragError(f"the site's resident worker at {socket_path} is not running ({exc}); restart the site") from None
        except FileNotFoundError as exc:
            if time.time() > deadline:
                raise FedragError(
                    f"the site's resident worker at {socket_path} is not reachable ({exc}); restart the site"
                ) from None
            time.sleep(0.5)
        except (OSError, EOFError) as exc:
            raise FedragError(f"the site's resident worker at {socket_path} is not reachable ({exc}); restart the site") from None
    with conn:
        # plain pickle, by value: Connection.send's ForkingPickler would pass tensors as
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
    """When this process started (epoch seconds; 0 where the system does not say)."""
    import os

    import psutil

    try:  # Linux: the uptime now and at this process's start, to 10 ms (psutil adds the boot time, whole seconds)
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere (macOS): psutil's, from the kernel's record of the process
        return psutil.Process().create_time()
    except psutil.Error:
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
        "dispatch_s": max(0.0, (born if spawned else now) - created) if created > 0 else 0.0,
        "startup_s": now - born if spawned else 0.0,
    }


def central_dp_clipping(msg, context, call_next):
    """Flower's client-side fixed clipping (`fixedclipping_mod`), active only when the server
    asks for it. That mod reads exactly one config record; under secure aggregation the
    message also carries SecAgg+'s, so the mod is shown the round's record alone and every
    record is back in place before the site trains and after the mod returns."""
    from flwr.clientapp.mod import fixedclipping_mod

    cfg = msg.content.config_records.get(CONFIG)
    if cfg is None or RoundInstruction.from_record(cfg).clipping_norm is None:
        return call_next(msg, context)
    others = {k: v for k, v in msg.content.config_records.items() if k != CONFIG}

    def restored(inner_msg, inner_context):
        inner_msg.content.update(others)
        return call_next(inner_msg, inner_context)

    for key in others:
        del msg.content[key]
    try:
        return fixedclipping_mod(msg, context, restored)
    finally:
        msg.content.update(others)


def make_client_app(task: FedTask | None, site_data, policy=None, mods=(), plan=None):
    """A Flower ClientApp. `task=None` reads the task from `context.run_config`;
    `site_data(context) -> (corpus_path, examples)` gives this site's private data;
    `policy(context) -> SitePolicy` the models the site loads (default: the node
    config's `allow-models`, else the bundled models only); `mods`: extra Flower
    client mods, run outside fedrag's DP clipping mod; `plan`: a Strategy object to
    run (simulation: any composition of stage objects, captured as is), else the task's."""
    from fedrag.federation.site.policy import SitePolicy, version_mod

    policy = policy or (lambda context: SitePolicy.from_node_config(context.node_config))
    from flwr.app import ArrayRecord, Message, RecordDict
    from flwr.clientapp import ClientApp

    def _task(context) -> FedTask:
        apply_defaults()  # a site's process is an entry point: Ray workers do not inherit the launcher's filters
        t = task or run_task(context.run_config)
        site = policy(context)
        site.check(retriever=t.models.retriever, generator=t.models.generator)
        if plan is None:
            site.check_strategy(t.models.strategy)
        return t

    from fedrag.federation.privacy.local_dp import make_local_dp_mod
    from fedrag.federation.privacy.secagg import make_secagg_mod

    # innermost first: central-DP clipping, then local DP's noise, then secure aggregation's masks; the
    # server's fedrag version is checked before any of them
    app = ClientApp(mods=[*mods, version_mod, make_secagg_mod(), make_local_dp_mod(_task, site_data), central_dp_clipping])

    @app.train()
    def train(msg: Message, context) -> Message:
        arrival, t_enter = _arrival(msg), time.perf_counter()
        t = _task(context)  # the site's policy first: nothing loads before it
        corpus, examples = site_data(context)
        arrival["prepare_s"] = time.perf_counter() - t_enter  # policy check, plan import, the site's data
        instruction = RoundInstruction.from_record(msg.content[CONFIG])
        key = _optimizer_key(instruction.phase)
        moments = (context.state[key] if key in context.state else ArrayRecord()) if t.training.keep_optimizer else None
        kwargs = dict(
            task=t,
            corpus=corpus,
            examples=examples,
            arrays=msg.content[ARRAYS],
            config=instruction,
            optimizer_record=moments,
            device=context.node_config.get("device"),
            plan=plan,
        )
        reply, report, moments = _on_site(context, "train", kwargs)
        if moments is not None:
            _keep_moments(context.state, key, moments)
        report = replace(report, **arrival)
        return Message(RecordDict({ARRAYS: reply, METRICS: report.to_record()}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context) -> Message:
        t = _task(context)
        corpus, examples = site_data(context)
        kwargs = dict(
            task=t,
            corpus=corpus,
            examples=examples,
            arrays=msg.content[ARRAYS],
            config=RoundInstruction.from_record(msg.content[CONFIG]),
            device=context.node_config.get("device"),
            plan=plan,
        )
        report = _on_site(context, "evaluate", kwargs)
        return Message(RecordDict({METRICS: report.to_record()}), reply_to=msg)

    return app


def _on_site(context, op: str, kwargs: dict):
    """Run the round's `op` (`train`: [`train_message`][fedrag.federation.site.local_round.train_message],
    `evaluate`: [`evaluate_round`][fedrag.federation.site.local_round.evaluate_round]) in the site's
    resident worker when its node config names one (its models stay loaded), else here."""
    worker = context.node_config.get("resident")
    if worker:
        return run_resident(str(worker), op, **kwargs)
    from fedrag.federation.site.local_round import evaluate_round, train_message

    return (train_message if op == "train" else evaluate_round)(**kwargs)


def _keep_moments(state, key: str, moments) -> None:
    """Keep this phase's optimizer moments in the site's `context.state` for its next round."""
    for old in [k for k in state if k.startswith("fedrag.optimizer.") and k != key]:
        del state[old]  # an earlier phase's moments are done with
    state[key] = moments
