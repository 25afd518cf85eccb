"""The training step the timed sections measure: the `selfsup train` command lines of the
results rows' tasks, the loop's own step on a prepared run (`LoopStepper`), and how steps are
timed: warm-up, alternating timed windows, training FLOPs and the matmul rate."""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup import cli
from selfsup import train as loop
from selfsup.config import ExperimentConfig
from selfsup.data.streams import batch_items
from selfsup.metrics import MetricWindow
from selfsup.runtime import autocast

from .record import SCRATCH, portable
from .rows import GROUPS, ROWS

PEER_LR_PER_128 = 0.06  # LightlySSL's CIFAR-10 benchmark: SGD 0.06 x batch / 128
# Every task as the results rows train it (bench/gpu_results.yaml): counting with its own
# config, the multi-task paper's tasks alone on the multitask trunk.
TASKS = {
    name: list(ROWS[name].train)
    for name in ("counting", "relative-position", "colorization", "exemplar", "rotation", "jigsaw")
}
# The step of the peer comparison, a task of its own where the tasks are timed on a GPU.
INFONCE = "exemplar-infonce-resnet18"
PHASES = ("data", "views", "model", "log")
Contenders = dict[str, Callable[[], int]]  # name -> one step, returning its images


def train_argv(base: list[str], data: Path, batch: int | None, extra: list[str]) -> list[str]:
    """A `selfsup train` command line (its --out is never written: runs go to scratch)."""
    argv = ["train", *base, "--data", str(data), "--out", "runs/perf"]
    return [*argv, *([f"data.batch_size={batch}"] if batch else []), *extra]


def task_argv(name: str, data: Path, sizes, schedule: str = "constant") -> list[str]:
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


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads finished work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], int], steps: int, device: torch.device) -> tuple[int, float]:
    """Images of `steps` calls of `step` and their seconds, the device's queued work done."""
    synchronize(device)
    started = time.perf_counter()
    images = sum(step() for _ in range(steps))
    synchronize(device)
    return images, time.perf_counter() - started


def warm_up(contenders: Contenders, steps: int, device: torch.device) -> dict[str, float]:
    """Untimed steps of each contender; returns each one's first-step seconds (compilation,
    allocator and cache warm-up land there)."""
    first = {}
    for name, step in contenders.items():
        first[name] = round(timed(step, 1, device)[1], 3)
        timed(step, steps - 1, device)
    return first


def alternate(contenders: Contenders, windows: int, steps: int, device: torch.device) -> dict:
    """Images/s of each contender over `windows` timed windows of `steps` steps, taken in
    turn (A, B, A, B, ...): a slow spell of a shared machine hits all contenders alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(windows):
        for name, step in contenders.items():
            images, seconds = timed(step, steps, device)
            rates[name].append(images / seconds)
    return {
        name: {"images_per_sec": round(float(np.median(v)), 2), "windows": [round(r, 2) for r in v]}
        for name, v in rates.items()
    }


def training_flops(model: nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """FLOPs of one forward and backward pass (matmuls and convolutions, as counted by
    torch.utils.flop_counter), gradients cleared after."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        forward().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_tflops(side: int, dtype: torch.dtype, repeats: int, device: torch.device) -> dict:
    """Throughput of a square (side x side) @ (side x side) matmul: best and median run."""
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    out = torch.empty_like(a)

    def multiply() -> int:
        torch.mm(a, b, out=out)
        return 0

    multiply()  # warm-up: thread pool, packing buffers
    seconds = [timed(multiply, 1, device)[1] for _ in range(repeats)]
    flops = 2 * side**3
    return {
        "side": side,
        "best_tflops": round(flops / min(seconds) / 1e12, 4),
        "median_tflops": round(flops / float(np.median(seconds)) / 1e12, 4),
    }


def utilisation(flops_per_image: float, images_per_sec: float, peak_tflops: float) -> float:
    """The share of the matmul rate `peak_tflops` a step at `images_per_sec` uses."""
    return round(flops_per_image * images_per_sec / (peak_tflops * 1e12), 4)


def peak_memory_gib(device: torch.device) -> float | None:
    """The most GPU memory allocated since the last call (None on a CPU)."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 2)


class LoopStepper:
    """Steps of `selfsup train` on a prepared run, made by the loop's own functions: `full`,
    one iteration of the loop (its phases timed on a CPU only: on a GPU that would wait for
    the device); `bare`, train.optimize alone on one batch's views; `views_only`, no model.
    `choose_precision`: with `train.precision=auto` on a CPU, the dtype the loop would take."""

    def __init__(self, cfg: ExperimentConfig, folder: Path, choose_precision: bool = False):
        started = time.perf_counter()
        self.run = loop.prepare(cfg, folder, progress=False)
        self.prepare_seconds = round(time.perf_counter() - started, 2)
        self.trained, self.scaler, self.amp_dtype = loop.training_setup(self.run)
        self.batches = self.run.data.batches(0)
        self.window = MetricWindow()
        self.timed_phases = self.run.device.type != "cuda"
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        self.step = 0
        self.views: dict | None = None
        self.precision_choice = None
        auto_on_cpu = self.run.cfg.train.precision == "auto" and self.run.device.type == "cpu"
        if choose_precision and auto_on_cpu:
            # As the loop does: bf16 or fp32 by timing this run's step on its first views
            # (else the bench's one precision, that of its matmul peak, holds for every step).
            items, self.views = self.next_views()
            self.precision_choice = loop.cpu_precision(self.run, self.views, items)
            self.amp_dtype = self.precision_choice.dtype

    def compiled(self) -> LoopStepper:
        """The same run, model and batches, stepped through torch.compile(model)."""
        other = copy.copy(self)
        other.trained = torch.compile(self.run.model)
        other.phase_seconds = dict.fromkeys(PHASES, 0.0)
        return other

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.timed_phases:
            synchronize(self.run.device)
        started = time.perf_counter()
        with torch.profiler.record_function(f"perf/{name}"):
            yield
        if self.timed_phases:
            synchronize(self.run.device)
            self.phase_seconds[name] += time.perf_counter() - started

    def phase_shares(self) -> dict[str, float] | None:
        """The share of the timed steps' time spent in each phase (None on a GPU)."""
        if not self.timed_phases:
            return None
        total = sum(self.phase_seconds.values()) or 1.0
        return {name: round(value / total, 4) for name, value in self.phase_seconds.items()}

    def warmed_up(self, steps: int) -> float:
        """`steps` untimed full steps, the phase clocks cleared after them (shares of timed
        steps only); the first step's seconds."""
        first = warm_up({"full": self.full}, steps, self.run.device)["full"]
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        return first

    def next_views(self) -> tuple[int, dict]:
        self.step, fields = next(self.batches)
        return batch_items(fields), loop.step_views(self.run, self.step, fields)

    def full(self) -> int:
        with self.phase("data"):
            self.step, fields = next(self.batches)
        with self.phase("views"):
            views = loop.step_views(self.run, self.step, fields)
        with self.phase("model"):
            out = loop.optimize(
                self.run, self.trained, views, self.step, self.scaler, self.amp_dtype
            )
        with self.phase("log"):
            self.window.add(out, self.step)
            if (self.step + 1) % self.run.cfg.train.log_every == 0:
                self.window.read()
        return batch_items(fields)

    def bare(self) -> int:
        if self.views is None:
            _, self.views = self.next_views()
        loop.optimize(self.run, self.trained, self.views, self.step, self.scaler, self.amp_dtype)
        return self.run.cfg.data.batch_size

    def views_only(self) -> int:
        return self.next_views()[0]

    def flops_per_image(self) -> float:
        """Training FLOPs per image of this task's step (the uncompiled module)."""
        batch, views = self.next_views()

        def loss() -> torch.Tensor:
            with autocast(self.run.device, self.amp_dtype):
                return self.run.model(views)["loss"]

        return training_flops(self.run.model, loss) / batch
