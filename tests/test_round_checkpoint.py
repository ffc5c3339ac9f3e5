"""The server's round checkpoint refuses what it cannot resume from, before a run starts."""

import pytest

from fedrag.errors import FedragError
from fedrag.federation.task import FedTask


def test_a_truncated_checkpoint_is_refused_before_anything_starts_and_by_the_server(tmp_path):
    """The launcher (`read_checkpoint`, before Ray or a SuperLink starts) and the server
    (`load_checkpoint`, under `flwr run`) both refuse a checkpoint whose weights file was cut."""
    import json

    import torch
    from safetensors.torch import save_file

    from fedrag.federation.server.round_checkpoint import load_checkpoint, read_checkpoint, run_identity

    task = FedTask(stage="ralt", rounds=3)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    save_file({"generator.w": torch.zeros(64)}, str(ckpt / "global.safetensors"))
    state = {"phase": 0, "rounds_done": 1, "history": [], "task": run_identity(task), "dp_accountant": None}
    (ckpt / "state.json").write_text(json.dumps(state))
    assert read_checkpoint(tmp_path, task, 1)["rounds_done"] == 1
    whole = (ckpt / "global.safetensors").read_bytes()
    (ckpt / "global.safetensors").write_bytes(whole[: len(whole) // 2])
    for refuse in (lambda: read_checkpoint(tmp_path, task, 1), lambda: load_checkpoint(tmp_path, None, task, 1)):
        with pytest.raises(FedragError, match="checkpoint: corrupt checkpoint .*delete it"):
            refuse()
