"""Helpers shared by several test files."""

from pathlib import Path

from selfsup.config import ExperimentConfig, parse_overrides, resolve
from selfsup.tasks import task_config_class

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


def tiny_config(data: Path, *extra: str) -> ExperimentConfig:
    """A counting config small enough to train in well under a second per step."""
    values = parse_overrides([*TINY, f"data.path={data}", *extra])
    return resolve(values, task_config_class)
