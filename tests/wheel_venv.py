"""The installed wheel is the product: a fresh venv holding only the built fedrag wheel (and
Flower's, for its command-line tools), with no source checkout on its path. The other
dependencies come from the test venv's site-packages, added as a plain path entry (its
editable fedrag hook is not processed)."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_wheel(work: Path) -> tuple[Path, dict[str, str]]:
    """Build fedrag's wheel and install it into a fresh venv under `work`: the venv's `bin`
    folder, and an environment without the test run's PYTHONPATH or VIRTUAL_ENV."""
    import flwr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # the test venv's setuptools builds it: an isolated build would first install setuptools
    # into a temporary environment (~6 CPU-s)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"), str(ROOT)],
        check=True,
        env=env,
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("fedrag-*.whl")
    fresh = work / "fresh"
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
        cwd=work,
    )
    where = subprocess.run(
        [str(py), "-c", "import fedrag; print(fedrag.__file__)"], check=True, capture_output=True, text=True, cwd=work, env=env
    ).stdout.strip()
    assert where.startswith(site), f"fedrag must come from the wheel, not the checkout: {where}"
    return fresh / "bin", env
