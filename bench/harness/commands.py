"""The `selfsup train` command lines the sections time and run, and the configs they resolve
to through the CLI's own code."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selfsup import cli
from selfsup.config import ExperimentConfig

from .record import SCRATCH, portable
from .sizes import Sizes

PEER_LR_PER_128 = 0.06  # LightlySSL's CIFAR-10 benchmark: SGD 0.06 x batch / 128

# Every task as `selfsup train` runs it (bench/run.py's settings): counting with its own
# config, the multi-task paper's tasks alone on the multitask trunk.
TASKS: dict[str, list[str]] = {
    "counting": ["counting", "--config", "counting_small"],
    **{
        task: ["multitask", "--config", "multitask_small", "--tasks", task,
               "multitask.lasso=false"]
        for task in ("relative-position", "colorization", "exemplar", "rotation", "jigsaw")
    },
}  # fmt: skip
# The step of the peer comparison, a task of its own where the tasks are timed on a GPU.
INFONCE = "exemplar-infonce-resnet18"


def train_argv(base: list[str], data: Path, batch: int | None, extra: list[str]) -> list[str]:
    """A `selfsup train` command line (its --out is never written: runs go to scratch)."""
    argv = ["train", *base, "--data", str(data), "--out", "runs/perf"]
    return [*argv, *([f"data.batch_size={batch}"] if batch else []), *extra]


def exemplar_argv(data: Path, batch: int, schedule: str = "constant") -> list[str]:
    """Our exemplar task in its InfoNCE form, set up as the peer: ResNet-18 (small stem,
    width 1), same batch, resolution, loss temperature and SGD settings (a constant lr for
    timing; the loop keeps its Nesterov momentum and gradient clipping)."""
    return [
        "train", "exemplar", "--data", str(data), "--out", "runs/perf",
        "backbone.name=resnet18", "backbone.stem=small", "backbone.width=1.0",
        "backbone.num_stages=4", "data.image_size=32", f"data.batch_size={batch}",
        "exemplar.loss=infonce", "exemplar.temperature=0.5", "optim.name=sgd",
        f"optim.lr={PEER_LR_PER_128 * batch / 128:g}", "optim.momentum=0.9",
        "optim.weight_decay=0.0005", f"optim.schedule={schedule}", "optim.warmup_steps=0",
    ]  # fmt: skip


def task_argv(name: str, data: Path, sizes: Sizes, schedule: str = "constant") -> list[str]:
    """The command line of task `name` (a TASKS entry, or INFONCE with lr `schedule`) at
    `sizes`' batch."""
    if name == INFONCE:
        return exemplar_argv(data, sizes.peer_batch, schedule)
    return train_argv(TASKS[name], data, sizes.batch, [])


def loop_config(argv: list[str]) -> ExperimentConfig:
    """The config `selfsup <argv>` would train with, resolved by the CLI's own code."""
    return cli.train_config(cli.parse_args(argv))


def command_text(argv: list[str]) -> str:
    return portable(["selfsup", *argv])


@contextlib.contextmanager
def run_folder() -> Iterator[Path]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCRATCH, prefix="run-") as folder:
        yield Path(folder)
