"""Performance: where a training step's time goes, how the loop compares with a reference SSL
library, how close it runs to the hardware, and how training and evaluation grow with
processes and data.

    python bench/perf.py                      # every section -> bench/results/perf.json
    python bench/perf.py --quick              # tiny sizes, 1-2 min -> bench/work/perf_quick.json
    python bench/perf.py --only overhead hardware --tasks counting exemplar
    python bench/perf.py --only peer --compile        # ours also compiled
    python bench/perf.py --only overhead --compile    # also time train.compile=true

Sections (`--only NAME ...`; with --only the named sections replace theirs in the results file):

- overhead: per pretext task, images/s of the full training step as `selfsup train` makes it
  (batch from the in-memory cache, views, forward, backward, optimizer step, logging) against
  the bare forward + backward + step on views built once; overhead = 1 - full / bare, with
  the share of the full step spent in each phase.
- peer: LightlySSL's SimCLR (its own transforms through a torch DataLoader, torchvision
  ResNet-18 with the CIFAR stem) against our exemplar task with InfoNCE (pre-activation
  ResNet-18, small stem) on the same images, batch and precision, in alternating timed
  windows; both bare steps on in-memory tensors for reference; with --compile, ours also
  through torch.compile (compile time recorded). Learning per CPU-minute, the kNN accuracy of
  every task and of the peer after the same CPU budget, is bench/learning.py.
- hardware: square matmul throughput (fp32 and bf16) and each task's training FLOPs per
  image, so that measured images/s become a fraction of what the cores can do.
- scaling: images/s with 1 and 2 DDP processes (torchrun, gloo on CPU), and the time of
  feature extraction, the linear probe and graph building against data size, plotted log-log.
- profile: torch.profiler on a few full steps of counting, exemplar and the peer section's
  InfoNCE ResNet-18 step: the most expensive operations of the whole step and of view
  building alone.

Timed contenders run in alternating windows (A, B, A, B, ...) after warm-up steps, so a slow
spell of a shared machine hits all of them alike; each reports the median window. Every
section records its settings, the commands that reproduce it and the machine. Data:
$SELFSUP_DATA/cifar10 (see bench/run.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
import json
import multiprocessing
import os
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, ROOT, WORK, data_dir, machine, portable

from selfsup import cli
from selfsup import train as loop
from selfsup.config import ExperimentConfig, dump
from selfsup.metrics import MetricWindow
from selfsup.runtime import (
    autocast,
    cpu_has_amx,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)

SECTIONS = ("overhead", "peer", "hardware", "scaling", "profile")
SCRATCH = WORK / "perf"  # run folders and data subsets (git-ignored)
PHASES = ("data", "views", "model", "log")

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


# ---------------------------------------------------------------------------------------------
# The library's training step, with the loop's own functions
# ---------------------------------------------------------------------------------------------


class LoopStepper:
    """Steps of `selfsup train` on a prepared run, made by the loop's own functions.

    `full`: one iteration of the loop (next cached batch, train.step_views, train.optimize,
    MetricWindow.add), timed per phase. `bare`: train.optimize alone, on the views of one
    batch built once. `views_only`: the batch and its views, no model.
    """

    def __init__(self, cfg: ExperimentConfig, folder: Path):
        started = time.perf_counter()
        self.run = loop.prepare(cfg, folder, progress=False)
        self.prepare_seconds = round(time.perf_counter() - started, 2)
        self.trained, self.scaler, self.amp_dtype = loop.training_setup(self.run)
        self.batches = self.run.stream.batches(0)
        self.window = MetricWindow()
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        self.step = 0
        self.views: dict | None = None

    def compiled(self) -> LoopStepper:
        """The same run, model and batches, stepped through torch.compile(model)."""
        other = copy.copy(self)
        other.trained = torch.compile(self.run.model)
        other.phase_seconds = dict.fromkeys(PHASES, 0.0)
        return other

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.run.device)
        started = time.perf_counter()
        with torch.profiler.record_function(f"perf/{name}"):
            yield
        synchronize(self.run.device)
        self.phase_seconds[name] += time.perf_counter() - started

    def next_views(self) -> tuple[int, dict]:
        self.step, images, labels, masks = next(self.batches)
        return images.shape[0], loop.step_views(self.run, self.step, images, labels, masks)

    def full(self) -> int:
        with self.phase("data"):
            self.step, images, labels, masks = next(self.batches)
        with self.phase("views"):
            views = loop.step_views(self.run, self.step, images, labels, masks)
        with self.phase("model"):
            out = loop.optimize(
                self.run, self.trained, views, self.step, self.scaler, self.amp_dtype
            )
        with self.phase("log"):
            self.window.add(out, self.step)
        return images.shape[0]

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


def phase_shares(seconds: dict[str, float]) -> dict[str, float]:
    total = sum(seconds.values()) or 1.0
    return {name: round(value / total, 4) for name, value in seconds.items()}


# ---------------------------------------------------------------------------------------------
# overhead
# ---------------------------------------------------------------------------------------------


def measure_task(bench: Bench, argv: list[str]) -> dict:
    """Full against bare step of one task, alternating; with --compile also compiled."""
    cfg = loop_config(argv)
    with run_folder() as folder:
        stepper = LoopStepper(cfg, folder)
        flops = stepper.flops_per_image()
        contenders = {"full": stepper.full, "bare": stepper.bare}
        if bench.args.compile:
            compiled = stepper.compiled()
            contenders.update(full_compiled=compiled.full, bare_compiled=compiled.bare)
        first = warm_up(contenders, bench.sizes.warmup, bench.device)
        stepper.phase_seconds = dict.fromkeys(PHASES, 0.0)  # shares of the timed steps only
        rates = alternate(contenders, bench.sizes.windows, bench.sizes.window_steps, bench.device)
    full, bare = rates["full"]["images_per_sec"], rates["bare"]["images_per_sec"]
    row = {
        "command": command_text(argv),
        "batch": cfg.data.batch_size,
        "backbone": dump(cfg)["backbone"],
        "full_images_per_sec": full,
        "bare_images_per_sec": bare,
        "overhead_pct": round(100 * (1 - full / bare), 1),
        "full_phase_shares": phase_shares(stepper.phase_seconds),
        "train_flops_per_image": flops,
        "prepare_seconds": stepper.prepare_seconds,
        "first_step_seconds": first,
        "windows": {key: value["windows"] for key, value in rates.items()},
    }
    if bench.args.compile:
        row["compiled_full_images_per_sec"] = rates["full_compiled"]["images_per_sec"]
        row["compiled_bare_images_per_sec"] = rates["bare_compiled"]["images_per_sec"]
        row["compile_seconds"] = first["full_compiled"]  # the first compiled step compiles
    return row


def overhead_section(bench: Bench) -> dict:
    data = subset_npz(cifar("train"), bench.sizes.train_images)
    tasks = {}
    for name, base in TASKS.items():
        if bench.args.tasks and name not in bench.args.tasks:
            continue
        argv = train_argv(base, data, bench.sizes.batch, [])
        tasks[name] = row = measure_task(bench, argv)
        shares = row["full_phase_shares"]
        line = (
            f"  {name:18s} full {row['full_images_per_sec']:8.1f} img/s   bare "
            f"{row['bare_images_per_sec']:8.1f} img/s   overhead {row['overhead_pct']:5.1f} %   "
            f"(data {100 * shares['data']:.1f} %, views {100 * shares['views']:.1f} %)"
        )
        if bench.args.compile:
            line += (
                f"   compiled full {row['compiled_full_images_per_sec']:.1f} img/s "
                f"(compile {row['compile_seconds']:.0f} s)"
            )
        print(line, flush=True)
    return {
        "what": "images/s of the full `selfsup train` step (cached batch, views, forward, "
        "backward, optimizer step, logging) against the bare forward + backward + step on "
        "views built once; overhead_pct = 100 * (1 - full / bare)",
        "data": portable([data]),
        "precision": bench.precision,
        "warmup_steps": bench.sizes.warmup,
        "windows": bench.sizes.windows,
        "window_steps": bench.sizes.window_steps,
        "tasks": tasks,
    }


# ---------------------------------------------------------------------------------------------
# peer: LightlySSL SimCLR
# ---------------------------------------------------------------------------------------------


def cifar_resnet18() -> nn.Module:
    """torchvision's ResNet-18 as SimCLR's CIFAR-10 recipes use it: a 3x3 stride-1 first
    conv, no max pool, no classifier (512-d pooled output)."""
    import torchvision

    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def decode_pil(path: Path) -> list:
    """Every image of a packed-JPEG .npz as a decoded RGB PIL image (done once)."""
    from PIL import Image

    with np.load(path) as archive:
        jpeg, offsets = archive["jpeg"], archive["offsets"]
    return [
        Image.open(io.BytesIO(jpeg[start:end].tobytes())).convert("RGB")
        for start, end in itertools.pairwise(offsets)
    ]


class PilImages(torch.utils.data.Dataset):
    """PIL images through a transform (SimCLRTransform returns the two views)."""

    def __init__(self, images: list, transform: Callable):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index])


PEER_LR_PER_128 = 0.06  # LightlySSL's CIFAR-10 benchmark: SGD 0.06 x batch / 128


class PeerSimCLR:
    """SimCLR as LightlySSL's CIFAR-10 benchmark writes it: SimCLRTransform(input_size=32,
    gaussian_blur=0) over PIL images in a torch DataLoader, the CIFAR ResNet-18,
    SimCLRProjectionHead(512, 512, 128), NTXentLoss (temperature 0.5), SGD; one forward per
    view. channels_last and autocast as our loop uses them."""

    def __init__(self, images: list, batch: int, workers: int, bench: Bench, seed: int = 0):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        torch.manual_seed(seed)
        self.device, self.amp_dtype = bench.device, bench.amp_dtype
        self.backbone = cifar_resnet18()
        self.model = nn.Sequential(self.backbone, SimCLRProjectionHead(512, 512, 128))
        self.model.to(self.device, memory_format=torch.channels_last)
        self.criterion = NTXentLoss()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=PEER_LR_PER_128 * batch / 128,
            momentum=0.9,
            weight_decay=5e-4,
        )
        transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
        self.loader = torch.utils.data.DataLoader(
            PilImages(images, transform),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        self.batches = self._forever()
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def _forever(self) -> Iterator:
        while True:
            yield from self.loader

    def _loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last
        x0 = x0.to(self.device, non_blocking=True, memory_format=fmt)
        x1 = x1.to(self.device, non_blocking=True, memory_format=fmt)
        with autocast(self.device, self.amp_dtype):
            return self.criterion(self.model(x0), self.model(x1))

    def _train_on(self, x0: torch.Tensor, x1: torch.Tensor) -> int:
        loss = self._loss(x0, x1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return len(x0)

    def full(self) -> int:
        x0, x1 = next(self.batches)
        return self._train_on(x0, x1)

    def bare(self) -> int:
        if self.fixed is None:
            self.fixed = tuple(next(self.batches))
        return self._train_on(*self.fixed)

    def close(self) -> None:
        """Stop the loader's workers now: left to the garbage collector, a forked child (a
        later DataLoader's worker) may try to stop them and print an error."""
        self.batches.close()
        self.loader = None

    def loader_only(self) -> int:
        return len(next(self.batches)[0])

    def flops_per_image(self) -> float:
        x0, x1 = next(self.batches)
        self.model.train()
        return training_flops(self.model, lambda: self._loss(x0, x1)) / len(x0)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> (N, 512) backbone features, normalised as in training."""
        from selfsup.data import views as V
        from selfsup.tasks.base import MEAN, STD

        self.backbone.eval()
        out = []
        for start in range(0, len(images), batch):
            x = V.normalize(V.to_float(images[start : start + batch].to(self.device)), MEAN, STD)
            with autocast(self.device, self.amp_dtype):
                out.append(self.backbone(x.contiguous(memory_format=torch.channels_last)).float())
        self.backbone.train()
        return torch.cat(out).cpu()


def minor_page_faults() -> int:
    """Minor page faults of this process so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float:
    """The most resident memory this process has held (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def serve_peer(conn, data: str, batch: int, workers: int, device: str, amp_dtype, heap: str):
    """A PeerSimCLR in a process of its own, stepped on request over `conn`: the C heap
    settings are per process, so the peer runs with the defaults a plain PyTorch script gets
    (heap="system") or with `selfsup train`'s (heap="reuse")."""
    if heap == "reuse":
        keep_freed_memory()
    setup = SimpleNamespace(device=torch.device(device), amp_dtype=amp_dtype)
    peer = PeerSimCLR(decode_pil(Path(data)), batch, workers, setup)
    conn.send("ready")
    own = {"minor_page_faults": minor_page_faults, "peak_rss_mb": peak_rss_mb}
    while (method := conn.recv()) != "close":
        conn.send(own[method]() if method in own else getattr(peer, method)())
    peer.close()
    conn.send("closed")


class PeerProcess:
    """PeerSimCLR's steps, each run in a child process (see serve_peer)."""

    def __init__(self, data: Path, batch: int, workers: int, bench: Bench, heap: str):
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.conn, child = context.Pipe()
        args = (child, str(data), batch, workers, str(bench.device), bench.amp_dtype, heap)
        # Not a daemon: the peer's DataLoader starts worker processes of its own.
        self.process = context.Process(target=serve_peer, args=args, daemon=False)
        self.process.start()
        self._expect("ready")

    def _expect(self, what: str) -> None:
        if (got := self._receive()) != what:
            raise RuntimeError(f"peer process: expected {what!r}, got {got!r}")

    def _receive(self):
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join()
            raise RuntimeError(f"peer process died (exit code {self.process.exitcode})") from None

    def call(self, method: str):
        self.conn.send(method)
        return self._receive()

    def full(self) -> int:
        return self.call("full")

    def bare(self) -> int:
        return self.call("bare")

    def loader_only(self) -> int:
        return self.call("loader_only")

    def flops_per_image(self) -> float:
        return self.call("flops_per_image")

    def minor_page_faults(self) -> int:
        return self.call("minor_page_faults")

    def peak_rss_mb(self) -> float:
        return self.call("peak_rss_mb")

    def close(self) -> None:
        self.conn.send("close")
        self._expect("closed")
        self.process.join()


def faults_per_step(contenders: dict[str, Callable[[], int]], counters: dict) -> dict[str, int]:
    """Minor page faults during one more step of each contender (counted in the process that
    runs it): the cost of memory the step maps afresh."""
    faults = {}
    for name, step in contenders.items():
        before = counters[name]()
        step()
        faults[name] = counters[name]() - before
    return faults


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


def peer_throughput(
    bench: Bench, ours: LoopStepper, peer: PeerProcess, peer_reuse: PeerProcess
) -> dict:
    """Full and bare steps of both, the peer's full step also with our heap setting, and
    ours compiled with --compile; alternating."""
    contenders = {
        "ours_full": ours.full,
        "peer_full": peer.full,
        "peer_reuse_heap_full": peer_reuse.full,
        "ours_bare": ours.bare,
        "peer_bare": peer.bare,
    }
    if bench.args.compile:
        contenders["ours_compiled_full"] = ours.compiled().full
    first = warm_up(contenders, bench.sizes.warmup, bench.device)
    steps = bench.sizes.peer_window_steps
    rates = alternate(contenders, bench.sizes.windows, steps, bench.device)
    data_only = {"ours_views": ours.views_only, "peer_loader": peer.loader_only}
    data_rates = alternate(data_only, bench.sizes.windows, steps, bench.device)
    counters = {"ours_full": minor_page_faults, "peer_full": peer.minor_page_faults}
    counters["peer_reuse_heap_full"] = peer_reuse.minor_page_faults
    faults = faults_per_step({name: contenders[name] for name in counters}, counters)
    speed = {name: value["images_per_sec"] for name, value in rates.items()}
    ratios = {"ratio_ours_over_peer": round(speed["ours_full"] / speed["peer_full"], 3)}
    ratios["ratio_ours_over_peer_reuse_heap"] = round(
        speed["ours_full"] / speed["peer_reuse_heap_full"], 3
    )
    ratios["bare_ratio_ours_over_peer"] = round(speed["ours_bare"] / speed["peer_bare"], 3)
    if bench.args.compile:
        ratios["compiled_ratio_ours_over_peer"] = round(
            speed["ours_compiled_full"] / speed["peer_full"], 3
        )
        ratios["compile_seconds"] = first["ours_compiled_full"]
    return {
        **{f"{name}_images_per_sec": value for name, value in speed.items()},
        **ratios,
        **{f"{name}_images_per_sec": value["images_per_sec"] for name, value in data_rates.items()},
        "minor_page_faults_per_step": faults,
        # The heap setting's memory cost: each peer process's peak (same model and batch).
        "peer_peak_rss_mb": {"system": peer.peak_rss_mb(), "reuse": peer_reuse.peak_rss_mb()},
        "first_step_seconds": first,
        "windows": {name: value["windows"] for name, value in {**rates, **data_rates}.items()},
    }


def peer_section(bench: Bench) -> dict:
    try:
        import lightly
    except ImportError:  # the other sections still run
        print("  skipped: LightlySSL is not installed (pip install -e '.[bench]')", flush=True)
        return {"skipped": "LightlySSL is not installed: pip install -e '.[bench]'"}
    data = subset_npz(cifar("train"), bench.sizes.train_images)
    batch = bench.sizes.peer_batch
    argv = exemplar_argv(data, batch)
    workers = bench.args.peer_workers
    with run_folder() as folder:
        cfg = loop_config(argv)
        ours = LoopStepper(cfg, folder)
        peer = PeerProcess(data, batch, workers, bench, heap="system")
        peer_reuse = PeerProcess(data, batch, workers, bench, heap="reuse")
        flops = {"ours": ours.flops_per_image(), "peer": peer.flops_per_image()}
        result = peer_throughput(bench, ours, peer, peer_reuse)
        peer.close()
        peer_reuse.close()
    out = {
        "what": "images/s of LightlySSL SimCLR (own transforms, torch DataLoader, torchvision "
        "CIFAR ResNet-18) against our exemplar task with InfoNCE (pre-activation ResNet-18, "
        "small stem), alternating timed windows; bare: fwd + bwd + step on one in-memory batch. "
        "The peer runs in processes of its own: with the C heap's defaults, as a plain script "
        "gets them (peer_*), and with our train.heap=reuse setting (peer_reuse_heap_*)",
        "data": portable([data]),
        "ours_heap": cfg.train.heap,
        "batch": batch,
        "image_size": 32,
        "precision": bench.precision,
        "channels_last": True,
        "lightly": lightly.__version__,
        "peer_workers": bench.args.peer_workers,
        "peer_setup": "SimCLRTransform(input_size=32, gaussian_blur=0.0); torchvision resnet18 "
        "with conv1 3x3/1, no maxpool, fc=Identity; SimCLRProjectionHead(512, 512, 128); "
        f"NTXentLoss(temperature=0.5); SGD(lr={PEER_LR_PER_128 * batch / 128:g}, momentum=0.9, "
        "weight_decay=5e-4); one forward per view",
        "ours_command": command_text(argv),
        "train_flops_per_image": flops,
        **result,
    }
    print(
        f"  ours {out['ours_full_images_per_sec']:.1f} img/s, peer "
        f"{out['peer_full_images_per_sec']:.1f} img/s: ours/peer {out['ratio_ours_over_peer']:.2f}"
        f" (bare: ours {out['ours_bare_images_per_sec']:.1f}, peer "
        f"{out['peer_bare_images_per_sec']:.1f}; data alone: ours "
        f"{out['ours_views_images_per_sec']:.0f}, peer {out['peer_loader_images_per_sec']:.0f})"
        f" [{bench.precision}]",
        flush=True,
    )
    print(
        f"  peer with our heap setting {out['peer_reuse_heap_full_images_per_sec']:.1f} img/s: "
        f"ours/peer {out['ratio_ours_over_peer_reuse_heap']:.2f}; peak MB of the peer "
        f"{out['peer_peak_rss_mb']}; page faults per step "
        + ", ".join(f"{name} {count}" for name, count in out["minor_page_faults_per_step"].items()),
        flush=True,
    )
    if bench.args.compile:
        print(
            f"  ours compiled {out['ours_compiled_full_images_per_sec']:.1f} img/s: ours/peer "
            f"{out['compiled_ratio_ours_over_peer']:.2f} (compile {out['compile_seconds']:.0f} s)",
            flush=True,
        )
    return out


# ---------------------------------------------------------------------------------------------
# hardware
# ---------------------------------------------------------------------------------------------


def matmul_tflops(side: int, dtype: torch.dtype, repeats: int, device: torch.device) -> dict:
    """Throughput of a square (side x side) @ (side x side) matmul: best and median run."""
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    out = torch.empty_like(a)
    torch.mm(a, b, out=out)  # warm-up: thread pool, packing buffers
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    flops = 2 * side**3
    return {
        "side": side,
        "best_tflops": round(flops / min(seconds) / 1e12, 4),
        "median_tflops": round(flops / float(np.median(seconds)) / 1e12, 4),
    }


def utilisation(flops_per_image: float, images_per_sec: float, peak_tflops: float) -> float:
    return round(flops_per_image * images_per_sec / (peak_tflops * 1e12), 4)


def hardware_section(bench: Bench) -> dict:
    sizes = bench.sizes
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if bench.precision == "fp16":
        dtypes["fp16"] = torch.float16
    matmul = {
        name: matmul_tflops(sizes.matmul, dtype, sizes.matmul_repeats, bench.device)
        for name, dtype in dtypes.items()
    }
    for name, row in matmul.items():
        print(f"  matmul {name} {row['side']}^3: {row['best_tflops']:.3f} TFLOP/s", flush=True)
    peak = matmul[bench.precision]["best_tflops"]
    overhead = bench.done.get("overhead") or overhead_section(bench)
    tasks = {}
    for name, row in overhead["tasks"].items():
        flops = row["train_flops_per_image"]
        tasks[name] = {
            "train_gflops_per_image": round(flops / 1e9, 4),
            "full_fraction_of_matmul": utilisation(flops, row["full_images_per_sec"], peak),
            "bare_fraction_of_matmul": utilisation(flops, row["bare_images_per_sec"], peak),
        }
    peer = bench.done.get("peer", {})
    if "train_flops_per_image" in peer:
        for who in ("ours", "peer"):
            flops = peer["train_flops_per_image"][who]
            tasks[f"peer_section_{who}"] = {
                "train_gflops_per_image": round(flops / 1e9, 4),
                "full_fraction_of_matmul": utilisation(
                    flops, peer[f"{who}_full_images_per_sec"], peak
                ),
                "bare_fraction_of_matmul": utilisation(
                    flops, peer[f"{who}_bare_images_per_sec"], peak
                ),
            }
    for name, row in tasks.items():
        print(
            f"  {name:22s} {row['train_gflops_per_image']:7.3f} GFLOP/img  "
            f"{100 * row['full_fraction_of_matmul']:5.1f} % of the {bench.precision} matmul rate "
            f"(bare {100 * row['bare_fraction_of_matmul']:.1f} %)",
            flush=True,
        )
    return {
        "what": "training FLOPs per image (forward + backward, FlopCounterMode) x measured "
        "images/s, as a fraction of the best square-matmul rate in the training precision",
        "precision": bench.precision,
        "amx": cpu_has_amx(),
        "matmul": matmul,
        "images_per_sec_from": "this run's overhead and peer sections",
        "tasks": tasks,
    }


# ---------------------------------------------------------------------------------------------
# scaling
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_throughput(bench: Bench, processes: int, data: Path) -> dict:
    """Counting trained by the CLI in `processes` processes (torchrun, gloo on CPU), each
    with cores / processes threads; images/s from metrics.jsonl, first window dropped."""
    sizes = bench.sizes
    threads = max(1, (os.cpu_count() or 1) // processes)
    argv = train_argv(TASKS["counting"], data, sizes.batch, [])
    argv += [
        "--steps", str(sizes.ddp_steps), "--quiet", f"train.log_every={sizes.ddp_log_every}",
        f"checkpoint.every={sizes.ddp_steps}",
    ]  # fmt: skip
    torchrun = ["torchrun", f"--nproc_per_node={processes}"] if processes > 1 else []
    shown = [*torchrun, *(["-m", "selfsup"] if torchrun else ["selfsup"]), *argv]
    with run_folder() as folder:
        out = str(folder / "run")
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                         f"--master_port={free_port()}"]  # fmt: skip
        command = [*launcher, "-m", "selfsup", *[out if a == "runs/perf" else a for a in argv]]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - started
        lines = (folder / "run" / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_sec"] for line in lines][1:]
    batch = loop_config(argv).data.batch_size
    return {
        "processes": processes,
        "threads_per_process": threads,
        "global_batch": batch * processes,
        "images_per_sec": round(float(np.median(rates)), 2),
        "windows": rates,
        "wall_seconds": round(wall, 1),
        "command": f"OMP_NUM_THREADS={threads} {portable(shown)}",
    }


def eval_scaling(bench: Bench) -> list[dict]:
    """Feature extraction (every probe layer of a random-init counting backbone, as `selfsup
    eval linear` reads them) and one layer's linear probe, against the number of images."""
    from selfsup.eval.features import extract_features
    from selfsup.eval.linear import train_linear_probe
    from selfsup.eval.protocol import load_labelled
    from selfsup.runs import backbone_from_config

    sizes = bench.sizes
    train_path = subset_npz(cifar("train"), max(sizes.eval_sizes))
    train = load_labelled(str(train_path), 32, progress=False)
    test = load_labelled(str(subset_npz(cifar("test"), sizes.probe_test)), 32, progress=False)
    cfg = loop_config(train_argv(TASKS["counting"], cifar("train"), None, []))
    torch.manual_seed(0)
    backbone = backbone_from_config(cfg.backbone)
    layers = list(backbone.probe_layers)
    probed = layers[-1]
    common = {"device": bench.device, "amp_dtype": bench.amp_dtype, "progress": False}
    # Also the warm-up: the first pass pays for thread pools and convolution primitives.
    test_features = extract_features(backbone, test.images, [probed], **common)[probed]
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))
    rows = []
    for count in sizes.eval_sizes:
        chosen = order[:count]  # random rows: the CIFAR-10 files are sorted by class
        started = time.perf_counter()
        features = extract_features(backbone, train.images[chosen], layers, **common)
        extracted = time.perf_counter()
        probe = train_linear_probe(
            features[probed], train.labels[chosen], test_features, test.labels, train.num_classes
        )
        rows.append({
            "images": count,
            "feature_seconds": round(extracted - started, 3),
            "feature_layers": layers,
            "probe_seconds": round(time.perf_counter() - extracted, 3),
            "probe_layer": probed,
            "probe_dims": probe.dims,
            "probe_lbfgs_steps": probe.steps,
        })  # fmt: skip
        print(
            f"  {count:7d} images: features {rows[-1]['feature_seconds']:8.2f} s, probe "
            f"({probed}, {probe.dims} dims) {rows[-1]['probe_seconds']:8.2f} s",
            flush=True,
        )
    return rows


def graph_cost(vectors: int) -> dict:
    """k-means + within-cluster kNN and 4-clique mining on random 128-d vectors, as
    bench/graph.py measures them (sqrt(N) clusters, 10 neighbours), unrounded."""
    from selfsup.graph.mining import cluster_and_search, four_cliques

    points = np.random.default_rng(0).standard_normal((vectors, 128), dtype=np.float32)
    started = time.perf_counter()
    _, neighbours = cluster_and_search(points, round(vectors**0.5), 10)
    searched = time.perf_counter()
    cliques = four_cliques(neighbours)
    return {
        "vectors": vectors,
        "kmeans_and_knn_seconds": round(searched - started, 3),
        "clique_seconds": round(time.perf_counter() - searched, 3),
        "cliques": len(cliques),
        "source": "bench/perf.py",
    }


def graph_scaling(bench: Bench) -> list[dict]:
    graph_cost(min(bench.sizes.graph_sizes))  # warm-up: faiss's first call sets up threads
    rows = [graph_cost(n) for n in bench.sizes.graph_sizes]
    recorded = RESULTS / "graph.json"  # 10^5 and 10^6 vectors, from bench/graph.py
    if recorded.exists():
        for row in json.loads(recorded.read_text())["rows"]:
            rows.append({**row, "source": "bench/results/graph.json"})
    for row in rows:
        print(
            f"  {row['vectors']:8d} vectors: k-means + kNN {row['kmeans_and_knn_seconds']:8.2f} s,"
            f" cliques {row['clique_seconds']:8.2f} s ({row['source']})",
            flush=True,
        )
    return rows


def loglog_slope(x: list[float], y: list[float]) -> float | None:
    """Exponent b of y ~ x^b fitted on the positive points (None with fewer than two)."""
    points = [(a, b) for a, b in zip(x, y) if a > 0 and b > 0]
    if len(points) < 2:
        return None
    xs, ys = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return round(float(np.polyfit(xs, ys, 1)[0]), 2)


def plot_scaling(eval_rows: list[dict], graph_rows: list[dict], path: Path) -> dict:
    """Log-log seconds against data size; returns each curve's fitted exponent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    images = [r["images"] for r in eval_rows]
    vectors = [r["vectors"] for r in graph_rows]
    curves = {
        "feature extraction (images)": (images, [r["feature_seconds"] for r in eval_rows]),
        "linear probe, one layer (images)": (images, [r["probe_seconds"] for r in eval_rows]),
        "graph: k-means + kNN (vectors)": (
            vectors,
            [r["kmeans_and_knn_seconds"] for r in graph_rows],
        ),
        "graph: 4-cliques (vectors)": (vectors, [r["clique_seconds"] for r in graph_rows]),
    }
    slopes = {}
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for label, (x, y) in curves.items():
        order = np.argsort(x)
        xs, ys = np.asarray(x)[order], np.asarray(y, dtype=float)[order]
        keep = ys > 0  # a log axis cannot show 0 s
        slopes[label] = loglog_slope(list(xs), list(ys))
        exponent = "" if slopes[label] is None else f" ~ N^{slopes[label]}"
        axes.plot(xs[keep], ys[keep], marker="o", label=f"{label}{exponent}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.xaxis.set_minor_formatter(NullFormatter())  # no crowded labels
    axes.set_xlabel("images or vectors (N)")
    axes.set_ylabel("seconds")
    axes.set_title("Evaluation and graph cost against data size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return slopes


def scaling_section(bench: Bench) -> dict:
    data = subset_npz(cifar("train"), bench.sizes.train_images)
    ddp = [ddp_throughput(bench, processes, data) for processes in (1, 2)]
    for row in ddp:
        print(
            f"  {row['processes']} process(es) x {row['threads_per_process']} thread(s): "
            f"{row['images_per_sec']:.1f} img/s (global batch {row['global_batch']})",
            flush=True,
        )
    eval_rows = eval_scaling(bench)
    graph_rows = graph_scaling(bench)
    plot = bench.figures / "scaling.png"
    slopes = plot_scaling(eval_rows, graph_rows, plot)
    return {
        "what": "counting images/s with 1 and 2 DDP processes (same per-process batch); "
        "feature extraction, linear probe and graph building seconds against data size",
        "ddp": ddp,
        "ddp_speedup": round(ddp[1]["images_per_sec"] / ddp[0]["images_per_sec"], 3),
        "evaluation": eval_rows,
        "graph": graph_rows,
        "loglog_exponents": slopes,
        "plot": portable([plot]),
    }


# ---------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------


def top_operations(profile: torch.profiler.profile, steps: int, count: int = 12) -> list[dict]:
    """The operations with the most self CPU time, per step (our phase labels left out)."""
    averages = [e for e in profile.key_averages() if not e.key.startswith("perf/")]
    averages.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    return [
        {
            "op": e.key,
            "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 3),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls_per_step": round(e.count / steps, 1),
        }
        for e in averages[:count]
    ]


def conv_shape(image: list[int], weight: list[int], stride, padding, dilation, groups):
    """(label, forward FLOPs) of a 2-d convolution from its input and weight shapes."""
    batch, in_ch, height, width = image
    out_ch, in_per_group, kh, kw = weight
    oh = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    label = f"{in_ch}->{out_ch} {kh}x{kw}/{stride[0]} at {height}x{width}"
    if groups != 1:
        label += f" groups {groups}"
    return label, 2.0 * batch * out_ch * oh * ow * in_per_group * kh * kw


def conv_layers(profile: torch.profiler.profile, steps: int) -> list[dict]:
    """Time and arithmetic rate per step of every convolution shape, forward and backward
    (the backward computes the input gradient, the weight gradient or both), from a profile
    recorded with record_shapes. A rate far below the others' marks a shape the convolution
    library handles badly. CPU time: on a GPU it is launch time, not kernel time."""
    totals: dict[str, dict[str, float]] = {}
    for event in profile.events():
        shapes, args = event.input_shapes, event.concrete_inputs
        if event.name == "aten::convolution" and len(shapes[1]) == 4 and not args[6]:
            label, flops = conv_shape(shapes[0], shapes[1], *args[3:6], args[8])
            phase = "forward"
        elif event.name == "aten::convolution_backward" and len(shapes[2]) == 4 and not args[7]:
            label, flops = conv_shape(shapes[1], shapes[2], *args[4:7], args[9])
            flops *= int(args[10][0]) + int(args[10][1])  # input grad, weight grad
            phase = "backward"
        else:
            continue
        keys = ("forward_ms", "backward_ms", "forward_flops", "backward_flops")
        row = totals.setdefault(label, dict.fromkeys(keys, 0.0))
        row[f"{phase}_ms"] += event.cpu_time_total / 1e3
        row[f"{phase}_flops"] += flops
    conv_ms = sum(row["forward_ms"] + row["backward_ms"] for row in totals.values()) or 1.0
    rows = []
    for label, row in totals.items():
        out = {"conv": label}
        for phase in ("forward", "backward"):
            out[f"{phase}_ms_per_step"] = round(row[f"{phase}_ms"] / steps, 2)
        out["share_of_conv_time"] = round((row["forward_ms"] + row["backward_ms"]) / conv_ms, 4)
        for phase in ("forward", "backward"):
            tflops = row[f"{phase}_flops"] / max(row[f"{phase}_ms"], 1e-9) / 1e9
            out[f"{phase}_tflops"] = round(tflops, 3)
        rows.append(out)
    return sorted(rows, key=lambda r: r["share_of_conv_time"], reverse=True)


def profile_task(bench: Bench, name: str, argv: list[str]) -> dict:
    """torch.profiler over full steps, then over view building alone; the tables go to
    `figures/profile_<name>.txt`."""
    steps = bench.sizes.profile_steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with run_folder() as folder:
        stepper = LoopStepper(loop_config(argv), folder)
        warm_up({"full": stepper.full}, bench.sizes.warmup, bench.device)
        stepper.phase_seconds = dict.fromkeys(PHASES, 0.0)
        with torch.profiler.profile(activities=activities, record_shapes=True) as full:
            for _ in range(steps):
                stepper.full()
        with torch.profiler.profile(activities=activities) as views:
            for _ in range(steps):
                stepper.views_only()
    tables = bench.figures / f"profile_{name}.txt"
    tables.parent.mkdir(parents=True, exist_ok=True)
    sort = "self_cpu_time_total"
    tables.write_text(
        f"{command_text(argv)}\n\n== full step ({steps} steps) ==\n"
        f"{full.key_averages().table(sort_by=sort, row_limit=30)}\n"
        f"== view building alone ({steps} steps) ==\n"
        f"{views.key_averages().table(sort_by=sort, row_limit=30)}\n"
    )
    row = {
        "command": command_text(argv),
        "steps": steps,
        "full_phase_shares": phase_shares(stepper.phase_seconds),
        "full_top_ops": top_operations(full, steps),
        "views_top_ops": top_operations(views, steps),
        "conv_layers": conv_layers(full, steps),
        "tables": portable([tables]),
    }
    print(f"  {name}: phase shares {row['full_phase_shares']}", flush=True)
    for conv in row["conv_layers"][:6]:
        print(
            f"    conv {conv['conv']:28s} {100 * conv['share_of_conv_time']:4.1f} % of conv time, "
            f"{conv['forward_tflops']:.3f} / {conv['backward_tflops']:.3f} TFLOP/s fwd / bwd",
            flush=True,
        )
    for op in row["views_top_ops"][:6]:
        print(
            f"    views: {op['op']:36s} {op['self_ms_per_step']:8.2f} ms/step "
            f"({100 * op['share']:.0f} %)",
            flush=True,
        )
    return row


def profile_section(bench: Bench) -> dict:
    data = subset_npz(cifar("train"), bench.sizes.train_images)
    tasks = {
        name: profile_task(bench, name, train_argv(TASKS[name], data, bench.sizes.batch, []))
        for name in ("counting", "exemplar")
    }
    # The step of the peer comparison: where the time goes against LightlySSL.
    infonce = exemplar_argv(data, bench.sizes.peer_batch)
    tasks["exemplar-infonce-resnet18"] = profile_task(bench, "exemplar-infonce-resnet18", infonce)
    return {
        "what": "torch.profiler over full training steps and over view building alone; "
        "self CPU time per operation; per convolution shape, CPU time and FLOP rate forward "
        "and backward (conv_layers)",
        "tasks": tasks,
    }


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Bench], dict]] = {
    "overhead": overhead_section,
    "peer": peer_section,
    "hardware": hardware_section,
    "scaling": scaling_section,
    "profile": profile_section,
}


def host(bench: Bench) -> dict:
    return {**machine(), "amx": cpu_has_amx(), "precision": bench.precision}


def scrubbed(text: str) -> str:
    """No machine paths in the results file."""
    return (
        text.replace(sys.executable, "python")  # first: the interpreter may sit under ROOT
        .replace(str(data_dir()), "$SELFSUP_DATA")
        .replace(str(ROOT) + "/", "")
        .replace(str(Path.home()), "~")
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="sections to run")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="overhead: tasks")
    parser.add_argument("--compile", action="store_true", help="also time train.compile=true")
    parser.add_argument(
        "--peer-workers", type=int, default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of the peer (LightlySSL's benchmark uses 8)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="results file (default by mode); figures go to OUT without .json"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not cifar("train").exists():
        sys.exit(f"CIFAR-10 not found at {cifar('train')}; set SELFSUP_DATA")
    device = resolve_device("auto")
    out = args.out or (WORK / "perf_quick.json" if args.quick else RESULTS / "perf.json")
    bench = Bench(
        sizes=QUICK if args.quick else FULL,
        args=args,
        device=device,
        amp_dtype=resolve_precision("auto", device),
        figures=out.parent / out.stem,  # plots and profiles beside the results file
        done={},
    )
    results = json.loads(out.read_text()) if out.exists() and args.only else {}
    command = shlex.join(["python", "bench/perf.py", *sys.argv[1:]])
    for name in args.only or SECTIONS:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        section = RUNNERS[name](bench)
        bench.done[name] = section
        results[name] = {
            **section,
            "mode": "quick" if args.quick else "full",
            "seconds": round(time.perf_counter() - started, 1),
            "command": command,
            "sizes": asdict(bench.sizes),
            "machine": host(bench),
        }
        out.parent.mkdir(parents=True, exist_ok=True)  # written after every section
        out.write_text(scrubbed(json.dumps(results, indent=2)) + "\n")
    print(f"wrote {portable([out])}")


if __name__ == "__main__":
    main()
