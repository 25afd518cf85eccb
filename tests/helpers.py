"""Helpers shared by several test files."""

import importlib.util
from pathlib import Path

import pytest
import torch

from selfsup.config import ExperimentConfig, parse_overrides, resolve
from selfsup.tasks import task_config_class
from selfsup.video.track import tracker_available

TINY = [
    "backbone.name=alexnet_small",
    "counting.num_counts=32",
    "counting.head_hidden=[32]",
    "counting.crop_size=16",
    "data.batch_size=16",
    "data.workers=0",
    "train.log_every=2",
    "optim.warmup_steps=2",
]


# The tracker the video tests follow objects with: the default, CSRT, where OpenCV has its
# contrib modules; MIL, which every OpenCV build has, where it does not.
TRACKER = "csrt" if tracker_available("csrt") else "mil"

HAVE_PYCOCOTOOLS = importlib.util.find_spec("pycocotools") is not None
NO_PYCOCOTOOLS = "eval detect scores mAP with pycocotools, which is not installed here"
needs_pycocotools = pytest.mark.skipif(not HAVE_PYCOCOTOOLS, reason=NO_PYCOCOTOOLS)


def tiny_config(data: Path, *extra: str) -> ExperimentConfig:
    """A counting config small enough to train in well under a second per step."""
    values = parse_overrides([*TINY, f"data.path={data}", *extra])
    return resolve(values, task_config_class)


# Added to TINY: a narrower, shallower backbone, so a step takes milliseconds and subprocess
# tests can train dozens of steps.
SMALL_RESNET = [
    "backbone.name=resnet18",
    "backbone.width=0.125",
    "backbone.stem=small",
    "backbone.num_stages=2",
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Import into a test module (autouse) whose tensors are tiny: a second OpenMP thread costs
    more in synchronisation than it saves, badly so when other processes keep the cores busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
