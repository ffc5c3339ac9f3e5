"""The round protocol: the server's instruction and the sites' reports round-trip through
Flower's records unchanged, and the audit's allow-lists are the protocol's keys."""

import pytest
from flwr.app import ConfigRecord, MetricRecord

from fedrag.federation.wire.messages import (
    CONFIG_KEYS,
    METRIC_KEYS,
    EvaluateReport,
    RoundInstruction,
    TrainReport,
)

INSTRUCTIONS = [
    RoundInstruction(0),
    RoundInstruction(1, round_offset=3, context=b"\x00safetensors", server_round=2),
    RoundInstruction(2, server_round=1, proximal_mu=0.01, clipping_norm=1.0),
]
TRAIN = [
    TrainReport(num_examples=4, train_loss=1.5),
    TrainReport(num_examples=1),
    TrainReport(
        num_examples=8,
        train_loss=0.25,
        client_wall_s=1.0,
        flops=3e9,
        generator_tokens=100,
        retriever_tokens=50,
        bytes_received=1024,
        threads=2,
        load_s=0.5,
        batch_size=4,
        bytes_sent=1024,
        dispatch_s=0.1,
        startup_s=0.2,
        prepare_s=0.3,
        local_dp_epsilon=2.5,
        local_dp_releases=1.0,
        secagg_clipped=0,
    ),
]
EVALUATE = [EvaluateReport(num_examples=16, eval_loss=2.0, phase=1), EvaluateReport(4, 0.5, 0, recall_at_5=0.75)]


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_the_instruction_round_trips_through_a_config_record(instruction):
    record = instruction.to_record()
    assert isinstance(record, ConfigRecord)
    assert RoundInstruction.from_record(record) == instruction
    assert set(record) <= CONFIG_KEYS


@pytest.mark.parametrize("report", TRAIN + EVALUATE)
def test_a_report_round_trips_through_a_metric_record(report):
    record = report.to_record()
    assert isinstance(record, MetricRecord)
    assert type(report).from_record(record) == report
    assert set(record) <= METRIC_KEYS


def test_the_wire_keys_are_those_of_the_sites_and_flower():
    """The keys sites and Flower's strategies read: a renamed field would break old sites."""
    full = RoundInstruction(1, 2, b"x", 3, 0.5, 1.0).to_record()
    assert list(full) == ["phase", "round-offset", "context", "server-round", "proximal-mu", "clipping_norm"]
    assert list(RoundInstruction(0).to_record()) == ["phase", "round-offset"]  # unset: not sent
    assert list(EVALUATE[1].to_record()) == ["num-examples", "eval-loss", "phase", "recall@5"]
    assert list(TRAIN[0].to_record()) == ["num-examples", "train-loss"]


def test_flowers_keys_decode_and_the_round_counts_the_phase():
    """Flower's strategy adds `server-round` (and FedProx `proximal-mu`) to the server's record."""
    record = RoundInstruction(1, round_offset=2).to_record()
    record["server-round"] = 3
    record["proximal-mu"] = 0.1
    instruction = RoundInstruction.from_record(record)
    assert (instruction.phase, instruction.round, instruction.mu) == (1, 5, 0.1)
    assert RoundInstruction.of({"phase": 0, "server-round": 1}).round == 1  # a plain mapping, as tests pass
    with pytest.raises(ValueError, match="server-round"):
        _ = RoundInstruction(0).round


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="unknown"):
        RoundInstruction.from_record({"phase": 0, "lr": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        TrainReport.from_record({"num-examples": 1, "train-loss": 0.0, "secret": 1.0})


def test_the_audit_allows_exactly_the_protocols_keys():
    from fedrag.federation.server import message_audit as audit

    assert audit.CONFIG_KEYS == CONFIG_KEYS and audit.METRIC_KEYS == METRIC_KEYS


@pytest.mark.parametrize("strategy", ["ra-dit", "two-phase", "multi-task", "independent"])
def test_a_site_builds_one_train_config_a_round_and_it_is_the_central_phase_config(strategy, monkeypatch):
    """The task's settings, the stage's defaults and the phase's overrides, in one construction,
    equal to what the phase gives centrally from the task's settings."""
    from fedrag.federation.task import FedTask
    from fedrag.train.config import TrainConfig

    task = FedTask(strategy=strategy, rounds=3, local_steps=2, lr_retriever=1e-3)
    built = []
    post_init = TrainConfig.__post_init__
    monkeypatch.setattr(TrainConfig, "__post_init__", lambda self: (built.append(1), post_init(self)))
    for phase in task.plan().phases:
        for lora in (False, True):
            built.clear()
            cfg = task.train_config(2, phase=phase, retriever_lora=lora)
            assert len(built) == 1, "one TrainConfig a round"
            assert cfg == phase.config(task.train_config(2), True, lora)
            assert cfg.lr_retriever == 1e-3 and cfg.steps == 2 and cfg.seed == 1
    window = task.round_window(2)  # 3 rounds of 2 steps: round 2 starts 2 steps into a 6-step schedule
    assert (window.total, window.offset) == (6, 2)


def test_a_site_process_parses_a_run_config_once():
    from fedrag.federation.site import client_app as client
    from fedrag.federation.task import FedTask

    config = {"stage": "ralt", "rounds": 3}
    first = client.run_task(config)
    assert client.run_task(dict(config)) is first and first == FedTask.from_config(config)
    assert client.run_task({**config, "rounds": 4}).training.rounds == 4


def test_a_rounds_window_continues_the_phases_schedule_where_the_earlier_rounds_left_it():
    """Linear warmup then decay over the phase's 6 steps (warmup int(0.5 · 6) = 3), hand-computed:
    lr(s) = 0.3 · s/3 for s < 3, else 0.3 · (6 - s)/3. Round 2 of 3 rounds of 2 steps starts at s = 2."""
    import torch

    from fedrag.errors import FedragError
    from fedrag.train.config import TrainConfig
    from fedrag.train.optimizer import RoundWindow, optimizer_and_schedule

    params = {"retriever.w": torch.nn.Parameter(torch.zeros(2))}
    cfg = TrainConfig(steps=2, lr_retriever=0.3, warmup_ratio=0.5)
    opt, sched = optimizer_and_schedule(params, cfg, 2, None, RoundWindow(6, 2))
    seen = [sched.get_last_lr()[0]]
    for _ in range(2):
        opt.step()
        sched.step()
        seen.append(sched.get_last_lr()[0])
    assert seen == pytest.approx([0.3 * 2 / 3, 0.3 * 3 / 3, 0.3 * 2 / 3])
    _, alone = optimizer_and_schedule(params, cfg, 2, None)  # central: the stage's own 2 steps, warmup int(1.0) = 1
    assert alone.get_last_lr()[0] == 0.0
    with pytest.raises(FedragError, match="offset 6 of 6"):
        RoundWindow(6, 6)
