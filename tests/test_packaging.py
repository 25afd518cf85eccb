"""The wheel as a user installs it: built from the source tree, installed into a folder of its
own and run from outside the repository, so nothing is found through the source checkout.
It must carry the presets and the demo's data, and report the version its metadata holds."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import selfsup
from tests.conftest import make_images

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed in)."""
    pytest.importorskip("build", reason="the `build` package (dev extras) makes the wheel")
    work = tmp_path_factory.mktemp("wheel")
    # No isolation: the build uses this environment's setuptools, so no download is needed.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(work),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(work.glob("selfsup-*.whl"))
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return wheel, target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "SELFSUP_CACHE": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_wheel_holds_presets_assets_and_metadata_version(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    presets = {p.name for p in (ROOT / "src" / "selfsup" / "configs").glob("*.yaml")}
    assert presets and presets <= {Path(n).name for n in names if "/configs/" in n}
    assert {"cifar10_sample_train.npz", "cifar10_sample_test.npz"} <= {Path(n).name for n in names}
    assert wheel.name.startswith(f"selfsup-{selfsup.__version__}-")


def test_installed_wheel_runs_from_outside_the_repository(installed, tmp_path):
    _, target = installed
    probe = run_installed(target, tmp_path, "-c", "import selfsup; print(selfsup.__file__)")
    assert probe.returncode == 0 and probe.stdout.strip().startswith(str(target)), probe
    version = run_installed(target, tmp_path, "-m", "selfsup", "--version")
    assert version.stdout.strip() == f"selfsup {selfsup.__version__}"
    listed = run_installed(target, tmp_path, "-m", "selfsup", "list", "configs")
    assert "multitask_small" in listed.stdout and str(target) in listed.stdout, listed

    images, _ = make_images(16, size=32)
    np.savez(tmp_path / "train.npz", images=images)
    trained = run_installed(
        target, tmp_path, "-m", "selfsup", "train", "multitask", "--config", "multitask_small",
        "--tasks", "rotation", "--data", "train.npz", "--out", "run", "--steps", "2", "--quiet",
        "data.batch_size=8", "data.workers=0",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()

    # The demo's code path on the bundled sample, cut to a few steps and a short probe.
    demo = (
        "from selfsup.demo import run_demo; from selfsup.eval.linear import ProbeSettings; "
        "r = run_demo('demo', steps=2, probe=ProbeSettings(weight_decays=(1e-2,), steps=3)); "
        "print(sorted(r))"
    )
    ran = run_installed(target, tmp_path, "-c", demo)
    assert ran.returncode == 0, ran.stderr
    assert (
        "random:alexnet_small" in ran.stdout and (tmp_path / "demo" / "linear_probe.json").is_file()
    )
