"""Settings are validated once, where they are defined: non-finite numbers and out-of-range
values are refused before anything loads, and what is reported is what was applied."""

import json
import math

import pytest

from lines import message_lines
from test_cli import run

NAN_CASES = [
    ["train", "--stage", "ralt", "--lr-retriever", "nan"],
    ["train", "--stage", "ralt", "--lr-generator", "inf"],
    ["train", "--stage", "ralt", "--epochs", "nan"],
    ["train", "--stage", "ralt", "--warmup-ratio", "nan"],
    ["search-lr", "--strategy", "two-phase", "--lrs-generator", "nan,inf"],
    ["search-lr", "--strategy", "two-phase", "--lrs-retriever", "1e-5,inf"],
    ["compare", "--test", "missing.jsonl", "--lr-generator", "nan"],
    ["federate", "--stage", "ralt", "--dp-noise", "nan"],
    ["federate", "--stage", "ralt", "--dp-clip", "inf"],
    ["federate", "--stage", "ralt", "--round-timeout", "nan"],
    ["federate", "--stage", "ralt", "--lr-generator", "nan"],
    ["eval", "--test", "missing.jsonl", "--temperature", "nan"],
]


@pytest.mark.parametrize("args", NAN_CASES, ids=lambda a: "-".join(a[:1] + a[-2:]))
def test_non_finite_settings_are_refused_before_anything_loads(monkeypatch, capsys, tmp_path, args):
    """Paths that do not exist: the refusal must come first, before data or models load."""
    cmd, *rest = args
    data = [] if cmd == "eval" else ["--corpus", tmp_path / "none.jsonl", "--train", tmp_path / "none.jsonl"]
    out = [] if cmd == "eval" else ["--out", tmp_path / "out"]
    code, _, err = run(monkeypatch, capsys, cmd, *rest, *data, *out)
    assert code == 2, err
    assert "must be a finite number" in err or "finite learning rates" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_a_run_config_with_nan_is_refused_at_the_site():
    from fedrag.errors import FedragError
    from fedrag.federation.task import FedTask

    for key in ("dp-noise", "dp-clip", "round-timeout", "lr-generator"):
        with pytest.raises(FedragError, match="finite"):
            FedTask.from_config({"stage": "ralt", key: math.nan})


def test_the_privacy_report_claims_coverage_only_for_noised_releases():
    """The report comes from the accountant: with no release counted it covers nothing
    (before, a run that never noised still wrote 'covers: the aggregated model updates')."""
    from fedrag.federation.server.aggregator import make_accountant
    from fedrag.federation.privacy.coverage import dp_report
    from fedrag.federation.task import FedTask

    task = FedTask(stage="ralt", dp_noise=1.0)
    accountant = make_accountant(task)
    report = dp_report(accountant.get_privacy_spent(), task)
    assert report["releases"] == 0 and report["epsilon"] is None and report["covers"].startswith("nothing")


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(
    monkeypatch, capsys, tmp_path, demo_dir, tiny_models
):
    out = tmp_path / "run"
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--full",
        "--lr-generator",
        "1e30",
        "--steps",
        "6",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "1",
        "--warmup-ratio",
        "0",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        out,
    )
    assert code == 2 and "diverged at step" in err and "Traceback" not in err, err
    assert len(message_lines(err)) == 1, err  # progress lines aside
    step = int(err.split("diverged at step ")[1].split()[0])
    ckpt = tmp_path / ".run.partial" / "phase0-ralt" / "checkpoint"
    assert not out.exists(), "nothing published"
    assert json.loads((ckpt / "state.json").read_text())["step"] == step - 1, "the last good step is kept"
    from safetensors.torch import load_file

    assert all(bool(t.isfinite().all()) for t in load_file(str(ckpt / "trainable.safetensors")).values())


def test_train_then_eval_in_bfloat16_through_the_cli(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    """``eval --dtype bfloat16`` loads the retriever in bfloat16 and fingerprints it for the
    store (numpy has no bfloat16: this was a TypeError traceback)."""
    out = tmp_path / "run"
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--dtype",
        "bfloat16",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        out,
    )
    assert code == 0, err
    code, stdout, err = run(
        monkeypatch,
        capsys,
        "eval",
        "--test",
        demo_dir / "test.jsonl",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--retriever",
        out / "retriever",
        "--generator",
        out / "generator",
        "--dtype",
        "bfloat16",
        "--test-limit",
        "2",
        "--max-new-tokens",
        "2",
    )
    assert code == 0 and "Traceback" not in err, err
    assert 0 <= json.loads(stdout.strip().splitlines()[-1])["recall@5"] <= 1
