"""A federated task is its five typed parts: frozen, hashable, built from parts or from
settings by name, and flat as a Flower run config without losing a value."""

import dataclasses
import pickle

import pytest

from fedrag.errors import FedragError
from fedrag.federation.task import Aggregation, FedTask, Models, Privacy, RunSettings, SiteTraining

# one non-default value per part setting, written by hand (not read from the classes)
CHANGED = {
    "models": {
        "strategy": "ra-dit",
        "retriever": "r",
        "generator": "g",
        "lora": False,
        "retriever_lora": True,
        "index_refresh": "rerank",
        "top_k": 7,
        "ralt_mode": "per-passage",
        "two_phase_loss": "lsr",
        "two_phase_order": "retriever-first",
    },
    "training": {
        "rounds": 5,
        "local_steps": 3,
        "batch_size": 6,
        "lr_generator": 1e-3,
        "lr_retriever": 3e-5,
        "warmup_ratio": 0.2,
        "gradient_checkpointing": True,
        "keep_optimizer": True,
        "seed": 9,
        "dtype": "float32",
        "score_batch_size": 2,
    },
    "aggregation": {
        "aggregator": "fedprox",
        "proximal_mu": 0.5,
        "server_lr": 0.3,
        "fraction": 0.5,
        "min_sites": 3,
        "round_timeout": 60.0,
    },
    "privacy": {
        "dp_noise": 0.7,
        "dp_clip": 2.0,
        "dp_delta": 1e-6,
        "local_dp_noise": 0.1,
        "local_dp_clip": 3.0,
        "secagg": True,
        "secagg_clip": 4.0,
        "secagg_quantization": 1024,
        "secagg_threshold": 2,
    },
    "run": {
        "out": "/o",
        "corpus": "/c",
        "train": "/t",
        "partition": "by-title",
        "eval_corpus": "/ec",
        "eval_qa": "/eq",
        "eval_limit": 7,
        "evaluate_every": 2,
        "device": "cuda:1",
        "report_to": "tensorboard",
    },
}
PARTS = {"models": Models, "training": SiteTraining, "aggregation": Aggregation, "privacy": Privacy, "run": RunSettings}
FLAT = {k: v for values in CHANGED.values() for k, v in values.items()}


def test_the_task_is_its_parts_whether_built_from_parts_or_from_names():
    by_name = FedTask(**FLAT)
    by_part = FedTask(**{p: PARTS[p](**values) for p, values in CHANGED.items()})
    assert by_name == by_part and hash(by_name) == hash(by_part)
    assert set(by_name.training.explicit.split(",")) == set(FLAT), "every setting given is recorded as the user's"
    for part, values in CHANGED.items():
        assert {k: getattr(getattr(by_name, part), k) for k in values} == values, part
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_name.training.rounds = 1  # a task read by a site cannot change under it
    assert FedTask(strategy="ra-dit").aggregation == Aggregation(), "a part not given takes its defaults"
    with pytest.warns(DeprecationWarning, match=r"FedTask.rounds is deprecated; use FedTask.training.rounds"):
        assert by_name.rounds == 5, "0.1.0's flat reads still answer, for one release"


def test_the_flat_form_round_trips_every_setting_and_refuses_what_is_no_setting():
    task = FedTask(**FLAT)
    flat = task.to_config()
    assert {k: flat[k] for k in FLAT} == FLAT and set(flat) == set(FLAT) | {"stage", "explicit"}
    assert FedTask.from_config(flat) == task
    assert FedTask.from_config({k.replace("_", "-"): v for k, v in flat.items()}) == task
    assert pickle.loads(pickle.dumps(task)) == task, "a simulation's sites receive it pickled"
    assert dataclasses.replace(task, rounds=2).training.rounds == 2, "replace() takes a part's setting by name"
    with pytest.raises(TypeError, match="'nope'"):
        FedTask(strategy="ra-dit", nope=1)
    with pytest.raises(FedragError, match="'nope' is not a fedrag task setting"):
        FedTask.from_config({**flat, "nope": 1})


def test_a_part_checks_its_values_and_the_task_checks_what_ties_parts():
    with pytest.raises(FedragError, match="--fraction"):
        Aggregation(fraction=0.0)
    with pytest.raises(FedragError, match="--dp-noise must be a finite number"):
        Privacy(dp_noise=float("nan"))
    with pytest.raises(FedragError, match="--aggregator must be one of"):
        FedTask(strategy="ra-dit", aggregator="fedmedian")
    with pytest.raises(FedragError, match="exceeds --min-sites 2"):  # privacy x aggregation
        FedTask(strategy="ra-dit", secagg=True, secagg_threshold=3, min_sites=2)
    for server_optimizer in ("fedadam", "fedyogi"):  # privacy x aggregation: refused before any site starts
        with pytest.raises(FedragError, match=f"central DP .* not {server_optimizer}"):
            FedTask(strategy="ra-dit", aggregator=server_optimizer, dp_noise=1.0)
    with pytest.raises(FedragError, match="exactly one of strategy or stage"):
        FedTask(models=Models(strategy="ra-dit", stage="ralt"))


def test_a_setting_in_two_parts_is_refused_where_the_class_is_read():
    from fedrag._settings import part, settings_of, setting

    @dataclasses.dataclass(frozen=True)
    class Other:
        rounds: int = setting(1, "a second 'rounds'")

    @dataclasses.dataclass(frozen=True, init=False)
    class Twice(FedTask):
        other: Other = part(Other)

    with pytest.raises(TypeError, match="'rounds' is declared in two parts"):
        settings_of(Twice)
