"""Shared fixtures: tiny generated datasets, and the real data folder when it is present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """`$SELFSUP_DATA`, else the `shared/data` folder beside the repository."""
    return Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if not (path / "cifar10").is_dir():
        pytest.skip(f"real data not found at {path} (set SELFSUP_DATA to the data folder)")
    return path


def make_images(
    count: int, size: int = 32, classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is visible (a bright square in a class-specific quadrant) + noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, size=(count, size, size, 3), dtype=np.uint8)
    labels = np.arange(count) % classes
    half = size // 2
    for i, label in enumerate(labels):
        top, left = (label // 2) * half, (label % 2) * half
        images[i, top : top + half, left : left + half] = 200 + rng.integers(0, 55, 3)
    return images, labels.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    images, labels = make_images(96)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c", "d"]))
    return path


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores: tests are faster without oversubscription between torch and workers.
    torch.set_num_threads(2)
    yield


def _cuda_param():
    reason = "no CUDA device here: the CUDA variant of this test runs on GPU machines"
    return pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=reason)
    )


# Tests that take `device` run once on the CPU and once on CUDA where a GPU is present, so
# the same assertions hold on both; on a machine without one the CUDA case is skipped.
DEVICES = ["cpu", _cuda_param()]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def cuda() -> torch.device:
    """For tests that only make sense on a GPU (syncs, device-resident caches)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: this test runs on GPU machines")
    return torch.device("cuda")


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """The suite's caches (features, precision measurements) in a folder of its own, not
    the user's: shared by the session, so runs of one workload make one choice."""
    if "SELFSUP_CACHE" not in os.environ:
        os.environ["SELFSUP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
