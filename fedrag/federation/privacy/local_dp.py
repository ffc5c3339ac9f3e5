"""Local differential privacy: a site clips and noises its update before it leaves the site,
and keeps its own privacy ledger.

Central DP (`dp_noise`) trusts the server with each site's clipped update and noises the
aggregate; local DP (`local_dp_noise`) trusts nobody: what leaves the site is already
noised. Each round the site's update Δ (the tensors it trained minus the global ones it
received) is clipped to L2 norm C (`local_dp_clip`, Flower's `compute_clip_model_update`)
and N(0, (zC)²) is added to every coordinate, z being the noise multiplier. Any change of
the site's data moves its clipped update by at most 2C, so each release is the Gaussian
mechanism with noise multiplier z / 2 at sensitivity 1; the site composes its releases in
Flower's RDP accountant and reports ε at the run's δ in its metrics (`local-dp-epsilon`).
The metrics themselves (losses, counts) are not noised.

The ledger (`.fedrag-privacy/` next to the site's corpus, or the node config's
`privacy-dir`) outlives the site's process and a server that is killed and resumed: a round
asked for again with the same global tensors (the server lost the reply) is answered with
the reply already released, which costs no privacy, so a resumed run composes exactly the
releases an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedrag.federation.wire.messages import ARRAYS, CONFIG, METRICS, RoundInstruction, TrainReport
from fedrag.federation.task import FedTask

LEDGER_DIR = ".fedrag-privacy"


def noise_multiplier(task: FedTask, node_config) -> float:
    """The larger of the task's `local_dp_noise` and the site's own node config
    `local-dp-noise`: a site can demand more noise than the server asks for, never less."""
    return max(float(task.privacy.local_dp_noise), float(node_config.get("local-dp-noise", 0.0)))


def accountant(delta: float, state: dict | None = None):
    """A site's RDP accountant (Flower's), restored from a ledger's `state`."""
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    acc = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=1,
            # Flower accepts no-amplification only with add-or-remove; without sampling the
            # relation is a label: the 2C sensitivity of a replaced dataset is in `release_event`
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    if state:
        acc.load_state_dict(state)
    return acc


def release_event(z: float):
    """One local release at noise multiplier `z` (sensitivity 2C, hence z / 2)."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    return GaussianPrivacyEvent(noise_multiplier=z / 2, sample_size=1, population_size=1)


def ledger_dir(task: FedTask, corpus: str, node_config) -> Path:
    """This site's ledger for this task: one folder per (site, task settings)."""
    root = Path(node_config.get("privacy-dir") or Path(corpus).resolve().parent / LEDGER_DIR)
    site = str(node_config.get("partition-id", "site"))
    key = hashlib.sha256(json.dumps(task.to_config(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    return root / f"{site}-{key}"


def _digest(record, instruction: RoundInstruction) -> str:
    """The request: phase, round of the phase (a resumed run numbers its rounds from 1 again,
    with the rounds already done as `round-offset`) and the global tensors."""
    h = hashlib.sha256(f"{instruction.phase}/{instruction.round}".encode())
    for name in record.keys():
        h.update(name.encode())
        h.update(bytes(record[name].data))
    return h.hexdigest()


def _read_ledger(folder: Path) -> dict:
    from fedrag.errors import FedragError

    path = folder / "ledger.json"
    if not path.is_file():
        return {}
    try:
        ledger = json.loads(path.read_text())
        accountant(ledger["delta"], ledger["accountant"])  # loads, or the state is damaged
        return ledger
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways
        raise FedragError(
            f"local DP: the site's privacy ledger {path} is damaged ({type(exc).__name__}); this site's releases "
            "so far cannot be counted: restore it from a backup, or start the run under a new --out"
        ) from None


def make_local_dp_mod(task_of, site_data):
    """The Flower client mod that applies local DP to train replies when the task (or the
    site) asks for it. `task_of(context)` gives the run's FedTask, `site_data(context)`
    the site's `(corpus, examples)`."""
    from flwr.app import Array, ArrayRecord, MessageType
    from flwr.supercore.differential_privacy import compute_clip_model_update

    from fedrag._io import atomic_dir
    from fedrag.errors import FedragError

    def local_dp(msg, context, call_next):
        if msg.metadata.message_type != MessageType.TRAIN:  # evaluation replies carry metrics only
            return call_next(msg, context)
        task = task_of(context)
        z = noise_multiplier(task, context.node_config)
        if z <= 0:
            return call_next(msg, context)
        instruction = RoundInstruction.from_record(msg.content[CONFIG])
        folder = ledger_dir(task, site_data(context)[0], context.node_config)
        ledger = _read_ledger(folder)
        digest = _digest(msg.content[ARRAYS], instruction)
        if ledger.get("last", {}).get("digest") == digest:  # asked again: the reply already released, not retrained
            from flwr.app import Message, RecordDict
            from safetensors.numpy import load_file

            arrays = ArrayRecord({k: Array(v) for k, v in load_file(str(folder / "reply.safetensors")).items()})
            # the released metrics as they were: Flower aggregates only replies with the same metric keys
            metrics = TrainReport.from_record(ledger["last"]["metrics"]).to_record()
            return Message(RecordDict({ARRAYS: arrays, METRICS: metrics}), reply_to=msg)
        sent = msg.content[ARRAYS]
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        out = reply.content[ARRAYS]
        if list(out.keys()) != list(sent.keys()):
            raise FedragError("local DP: the reply's tensors differ from the global ones it updates")
        names = list(out.keys())
        new = [np.array(a, copy=True) for a in out.to_numpy_ndarrays()]
        compute_clip_model_update(new, sent.to_numpy_ndarrays(), task.privacy.local_dp_clip)
        # fresh OS entropy: the training RNGs are seeded from the task, which the server knows
        rng = np.random.default_rng()
        for a in new:
            a += rng.normal(0.0, z * task.privacy.local_dp_clip, a.shape).astype(a.dtype)
        acc = accountant(task.privacy.dp_delta, ledger.get("accountant"))
        acc.compose(release_event(z))
        spent = acc.get_privacy_spent()
        report = TrainReport.from_record(reply.content[METRICS])
        report = replace(report, local_dp_epsilon=float(spent.epsilon), local_dp_releases=float(spent.num_releases))
        metrics = report.to_record()
        from safetensors.numpy import save_file

        try:
            with atomic_dir(folder) as tmp:  # counted before it is sent: a crash in between over-counts, never under
                save_file(dict(zip(names, new)), str(tmp / "reply.safetensors"))
                ledger = {
                    "noise_multiplier": z,
                    "clip": task.privacy.local_dp_clip,
                    "delta": task.privacy.dp_delta,
                    "accountant": acc.state_dict(),
                    "last": {"digest": digest, "metrics": dict(metrics)},
                }
                (tmp / "ledger.json").write_text(json.dumps(ledger))
        except OSError as exc:  # nothing is sent that the ledger has not counted
            raise FedragError(
                f"local DP: cannot write the site's privacy ledger {folder} ({exc.strerror or exc}); "
                "give the SuperNode a writable node config privacy-dir"
            ) from None
        reply.content[ARRAYS] = ArrayRecord({k: Array(v) for k, v in zip(names, new)})
        reply.content[METRICS] = metrics
        return reply

    return local_dp
