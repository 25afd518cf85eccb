"""What every section reads and the helpers they share: the tasks, the sizes of a full and a
--quick run, data subsets and `selfsup train` command lines, and the timing (warm-up steps,
alternating timed windows, training FLOPs)."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from run import WORK, data_dir, portable
from torch import nn

from selfsup import cli
from selfsup.config import ExperimentConfig

SCRATCH = WORK / "perf"  # run folders and data subsets (git-ignored)

# Every task of the overhead section as `selfsup train` runs it (bench/run.py's settings):
# counting with its own config, the multi-task paper's tasks alone on the multitask trunk.
TASKS: dict[str, list[str]] = {
    "counting": ["counting", "--config", "counting_small"],
    **{
        task: ["multitask", "--config", "multitask_small", "--tasks", task,
               "multitask.lasso=false"]
        for task in ("relative-position", "colorization", "exemplar", "rotation", "jigsaw")
    },
}  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """How much work each section does (full and --quick)."""

    train_images: int | None  # CIFAR-10 training images used (None: all 50,000)
    batch: int | None  # overhead and profile batch (None: each config's own)
    peer_batch: int
    peer_window_steps: int  # steps per window of the peer section (its steps are long)
    warmup: int  # untimed steps per contender before the first window
    windows: int  # timed windows per contender
    window_steps: int  # steps per window
    matmul: int  # side of the square matmuls
    matmul_repeats: int
    ddp_steps: int
    ddp_log_every: int
    eval_sizes: tuple[int, ...]  # images: feature extraction and linear probe
    probe_test: int  # test images the probe is scored on
    graph_sizes: tuple[int, ...]  # vectors: graph building
    profile_steps: int


FULL = Sizes(
    train_images=None, batch=None, peer_batch=256, peer_window_steps=4, warmup=3, windows=4,
    window_steps=10, matmul=4096, matmul_repeats=3, ddp_steps=60, ddp_log_every=10,
    eval_sizes=(1_000, 10_000, 50_000), probe_test=1_000, graph_sizes=(1_000, 10_000, 50_000),
    profile_steps=5,
)  # fmt: skip
QUICK = Sizes(
    train_images=512, batch=16, peer_batch=16, peer_window_steps=2, warmup=1, windows=2,
    window_steps=2, matmul=1024, matmul_repeats=2, ddp_steps=6, ddp_log_every=2,
    eval_sizes=(128, 256, 512), probe_test=128, graph_sizes=(1_000, 2_000, 4_000),
    profile_steps=2,
)  # fmt: skip


@dataclass
class Bench:
    """What every section reads: sizes, options, the device and where figures go."""

    sizes: Sizes
    args: argparse.Namespace
    device: torch.device
    amp_dtype: torch.dtype | None
    figures: Path
    done: dict  # sections measured earlier in this run, by name

    @property
    def precision(self) -> str:
        """The training precision's short name: fp32, bf16 or fp16 (autocast dtype)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


# ---------------------------------------------------------------------------------------------
# Data, configs, timing
# ---------------------------------------------------------------------------------------------


def cifar(split: str) -> Path:
    return data_dir() / "cifar10" / f"{split}_jpeg.npz"


def subset_npz(source: Path, count: int | None) -> Path:
    """`count` images of a packed-JPEG .npz drawn at random (seeded; the CIFAR-10 files are
    sorted by class), written once under bench/work/perf; `source` itself when count is None
    or covers it."""
    with np.load(source) as archive:
        offsets = archive["offsets"]
        total = len(offsets) - 1
        if count is None or count >= total:
            return source
        out = SCRATCH / f"{source.parent.name}_{source.stem}_{count}.npz"
        if out.exists():
            return out
        rows = np.sort(np.random.default_rng(0).permutation(total)[:count])
        jpeg = archive["jpeg"]
        blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in rows]
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_suffix(".tmp")
        with temporary.open("wb") as file:
            np.savez(
                file,
                jpeg=np.concatenate(blobs),
                offsets=np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
                labels=archive["labels"][rows],
                class_names=archive["class_names"],
            )
        temporary.replace(out)
    return out


def train_argv(base: list[str], data: Path, batch: int | None, extra: list[str]) -> list[str]:
    """A `selfsup train` command line (its --out is never written: runs go to scratch)."""
    argv = ["train", *base, "--data", str(data), "--out", "runs/perf"]
    return [*argv, *([f"data.batch_size={batch}"] if batch else []), *extra]


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


def warm_up(
    contenders: dict[str, Callable[[], int]], steps: int, device: torch.device
) -> dict[str, float]:
    """Untimed steps of each contender; returns each one's first-step seconds (compilation,
    allocator and cache warm-up land there)."""
    first = {}
    for name, step in contenders.items():
        for i in range(max(1, steps)):
            synchronize(device)
            started = time.perf_counter()
            step()
            synchronize(device)
            if i == 0:
                first[name] = round(time.perf_counter() - started, 3)
    return first


def alternate(
    contenders: dict[str, Callable[[], int]], windows: int, steps: int, device: torch.device
) -> dict[str, dict]:
    """Images/s of each contender over `windows` timed windows of `steps` steps, taken in
    turn (A, B, A, B, ...): a slow spell of a shared machine hits all contenders alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(windows):
        for name, step in contenders.items():
            synchronize(device)
            started = time.perf_counter()
            images = sum(step() for _ in range(steps))
            synchronize(device)
            rates[name].append(images / (time.perf_counter() - started))
    return {
        name: {
            "images_per_sec": round(float(np.median(values)), 2),
            "windows": [round(v, 2) for v in values],
        }
        for name, values in rates.items()
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
