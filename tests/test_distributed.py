"""Data-parallel training under torchrun (gloo on CPU): two processes, one update."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedrag.federation.launch.processes import free_port
from test_cli import run


def _weights(path: Path) -> dict:
    return {k: v for f in sorted(path.rglob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.slow
def test_two_torchrun_processes_take_the_step_of_one_process_on_the_global_batch(
    tmp_path, demo_dir, tiny_models, monkeypatch, capsys
):
    """RALT's loss is averaged over answer tokens: each process weights its share by its
    tokens over the global count, so two processes with 2 questions each update the LoRA
    adapter as one process with the batch of 4 does (the tiny Llama has no dropout)."""
    args = [
        "-m",
        "fedrag",
        "train",
        "--stage",
        "ralt",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--lr-generator",
        "1e-2",
        "--corpus",
        str(demo_dir / "corpus.jsonl"),
        "--train",
        str(demo_dir / "train.jsonl"),
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
    ]
    # loopback only; one thread per process, as torchrun sets it
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    # the one-process reference: the CLI in this process (a new one would import torch and transformers again)
    code, _, err = run(monkeypatch, capsys, *args[2:], "--out", tmp_path / "one")
    assert code == 0, err
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    a, b = _weights(tmp_path / "one" / "generator"), _weights(tmp_path / "two" / "generator")
    assert a.keys() == b.keys() and a
    moved = False
    for k in a:
        assert torch.norm(a[k] - b[k]) <= 1e-3 * torch.norm(a[k]) + 1e-8, k
        moved |= "lora_B" in k and bool(a[k].abs().sum() > 0)
    assert moved, "the adapter trained (LoRA's B starts at zero)"
    cost = {n: json.loads((tmp_path / n / "cost.json").read_text()) for n in ("one", "two")}
    assert (cost["one"]["world_size"], cost["two"]["world_size"]) == (1, 2)
    assert cost["one"]["total"]["examples"] == cost["two"]["total"]["examples"] == 8, "the work of both processes"
    assert cost["one"]["total"]["generator_tokens"] == cost["two"]["total"]["generator_tokens"]
    assert not list(tmp_path.glob(".two*")), "rank 1 wrote nothing beside rank 0's output"
