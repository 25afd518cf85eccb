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
from .rows import GROUPS, ROWS
from .sizes import Sizes

PEER_LR_PER_128 = 0.06  # LightlySSL's CIFAR-10 benchmark: SGD 0.06 x batch / 128
# Every task as the results rows train it (bench/gpu_results.yaml): counting with its own
# config, the multi-task paper's tasks alone on the multitask trunk.
TASKS = {
    name: list(ROWS[name].train)
    for name in ("counting", "relative-position", "colorization", "exemplar", "rotation", "jigsaw")
}
# The step of the peer comparison, a task of its own where the tasks are timed on a GPU.
INFONCE = "exemplar-infonce-resnet18"


def train_argv(base: list[str], data: Path, batch: int | None, extra: list[str]) -> list[str]:
    """A `selfsup train` command line (its --out is never written: runs go to scratch)."""
    argv = ["train", *base, "--data", str(data), "--out", "runs/perf"]
    return [*argv, *([f"data.batch_size={batch}"] if batch else []), *extra]


def task_argv(name: str, data: Path, sizes: Sizes, schedule: str = "constant") -> list[str]:
    """The command line of task `name` at `sizes`' batch: a TASKS entry, or INFONCE, the
    peer comparison's step at the peer's batch and lr (a constant one for timing)."""
    if name != INFONCE:
        return train_argv(TASKS[name], data, sizes.batch, [])
    lr = f"optim.lr={PEER_LR_PER_128 * sizes.peer_batch / 128:g}"
    return train_argv(
        list(GROUPS["peer"]), data, sizes.peer_batch, [lr, f"optim.schedule={schedule}"]
    )


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
