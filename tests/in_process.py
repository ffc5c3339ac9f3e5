"""Flower's Grid in this process, for tests where a Ray simulation proves nothing extra.

`run_in_process` runs fedrag's own ServerApp and ClientApp (as `to_flower` builds them,
mods included) with every message passed through Flower's wire format (protobuf) and each
site's `Context` kept between its messages, as a simulation keeps it. What it leaves out
is the transport: Ray's actors, the SuperLink's state and its polling. The tests that
exercise those still run real simulations and deployments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

# CPUs per site at which the Ray a simulation starts holds one actor for all the sites:
# each actor process imports torch and sentence-transformers (~8 CPU-s) and loads the models,
# and on CI's 2 cores a second actor runs no faster. For tests where the count proves nothing.
ONE_ACTOR = float(os.cpu_count() or 1)


def _wire(msg: Message) -> Message:
    """`msg` as a site or server receives it: encoded and decoded, never shared."""
    return message_from_proto(message_to_proto(msg))


class InProcessGrid(Grid):
    """Delivers each message to its site's ClientApp at once and returns its reply."""

    def __init__(self, client_app, n_sites: int, run_config: dict):
        self.client_app = client_app
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": node - SUPERLINK_NODE_ID - 1, "num-partitions": n_sites},
                state=RecordDict(),
                run_config=run_config,
            )
            for node in range(SUPERLINK_NODE_ID + 1, SUPERLINK_NODE_ID + 1 + n_sites)
        }
        self._run = Run.create_empty(1)
        self.replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self.replies[msg.metadata.message_id] = self._deliver(_wire(msg))
            ids.append(msg.metadata.message_id)
        return ids

    def _deliver(self, msg: Message) -> Message:
        try:
            reply = self.client_app(msg, self.contexts[msg.metadata.dst_node_id])
        except Exception as exc:  # noqa: BLE001 - a simulation reports a site's exception as an error reply
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc)}:<'{exc}'>"), reply_to=msg)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return _wire(reply)

    def pull_messages(self, message_ids) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_apps(client_app, server_app, n_sites: int) -> None:
    """Run `server_app` to its end over `n_sites` sites that each run `client_app`."""
    from fedrag.federation.server.run_loop import STOP

    STOP.clear()  # as `simulate` starts a run
    grid = InProcessGrid(client_app, n_sites, run_config={})
    before = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID  # as Flower's ServerApp process
    try:
        server_app(grid, Context(run_id=1, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={}))
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = before


def run_flower_simulation(client_app, server_app, n_sites: int) -> None:
    """Flower's own `run_simulation` of the apps on one Ray actor (as `fedrag.federation.
    launch.simulation.simulate` starts Ray), with the variables Ray and Flower set in this
    process (`RAY_SETS`: PYTHONPATH, to the whole sys.path) put back after as `simulate` does:
    every process a later test of this worker started would import from there."""
    from flwr.simulation import run_simulation

    from fedrag.federation.launch.simulation import ray_backend, ray_environment_kept

    with ray_environment_kept():
        backend = ray_backend(ONE_ACTOR)
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_sites, backend_config=backend)


def run_in_process(task, site_paths: list[dict[str, str]], plan=None, policy=None) -> dict:
    """`fedrag.federation.launch.simulation.simulate`'s run, without Ray: the server's cost summary."""
    from fedrag.federation.launch.flower_apps import sites_from_paths, to_flower
    from fedrag.federation.site.policy import TRUSTED
    from fedrag.federation.server.server_app import raise_recorded_error

    client_app, server_app = to_flower(task, sites_from_paths(site_paths), policy or (lambda context: TRUSTED), plan)
    run_apps(client_app, server_app, len(site_paths))
    raise_recorded_error(task)
    return json.loads((Path(task.run.out) / "cost.json").read_text())


def one_round(tiny_models, demo_dir, where: Path, how: str = "iid", **kw):
    """The demo data split between 2 sites under `where/sites`, and a one-round RALT task on
    the tiny models (one local step, no evaluation) writing to `where/run`; `kw` overrides."""
    from fedrag.data import load_corpus, load_qa
    from fedrag.data.partition import partition, write_sites
    from fedrag.federation.task import FedTask

    passages, train = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl")
    sites = write_sites(partition(passages, train, 2, how), where / "sites")
    settings = dict(rounds=1, local_steps=1, batch_size=2, evaluate_every=0, out=str(where / "run"))
    task = FedTask(stage="ralt", retriever=tiny_models["retriever"], generator=tiny_models["generator"], **{**settings, **kw})
    return task, sites
