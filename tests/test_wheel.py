"""The installed wheel is the product: a fresh venv with only the built fedrag wheel (and
Flower's, for its command-line tools) runs a 2-site loopback deployment, with no source
checkout on the path. The other dependencies come from the test venv's site-packages,
added as a plain path entry (its editable fedrag hook is not processed)."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


USER_PLAN = """
from dataclasses import dataclass
from typing import ClassVar

from fedrag.strategies import custom
from fedrag.train import RALTStage


@dataclass
class MyRALT(RALTStage):  # a stage of the user's own, by its own name
    name: ClassVar[str] = "my-ralt"


plan = custom("mine", MyRALT(top_k=2))
"""


def test_the_built_wheel_runs_a_loopback_deployment(tmp_path, tiny_models, demo_dir):
    """Also: the user's own strategy by import path (`--strategy userplans:plan`, a package
    of the user's on the path): a loopback deployment's sites are the user's, and import it."""
    import flwr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("fedrag-*.whl")
    fresh = tmp_path / "fresh"
    # no pip of its own (ensurepip costs ~3.6 CPU-s): this venv's pip installs into it
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, env=env)
    py = fresh / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--ignore-installed"]
        + [str(wheel), f"flwr=={flwr.__version__}"],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    where = subprocess.run(
        [str(py), "-c", "import fedrag; print(fedrag.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    assert where.startswith(site), f"fedrag must come from the wheel, not the checkout: {where}"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "userplans.py").write_text(USER_PLAN)
    res = subprocess.run(
        [
            str(fresh / "bin" / "fedrag"),
            "federate",
            "--engine",
            "deployment",
            "--strategy",
            "userplans:plan",
            "--sites",
            "2",
            "--rounds",
            "1",
            "--local-steps",
            "1",
            "--batch-size",
            "2",
            "--evaluate-every",
            "0",
            "--corpus",
            str(demo_dir / "corpus.jsonl"),
            "--train",
            str(demo_dir / "train.jsonl"),
            "--retriever",
            tiny_models["retriever"],
            "--generator",
            tiny_models["generator"],
            "--out",
            "run",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path / "user")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert [r["stage"] for r in rounds] == ["my-ralt"] and rounds[0]["replies"] == 2, "the user's strategy ran on both sites"
    assert (tmp_path / "run" / "generator" / "adapter_config.json").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "run").glob("fedrag-deploy-*/*.log"))
    assert str(ROOT / "fedrag") not in logs, "no process of the deployment imported the checkout"
