"""peer: LightlySSL's SimCLR, as its CIFAR-10 benchmark writes it, against our exemplar task
with InfoNCE on the same images, batch and precision."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from run import portable
from torch import nn

from selfsup.runtime import autocast, keep_freed_memory

from .common import (
    Bench,
    alternate,
    cifar,
    command_text,
    loop_config,
    run_folder,
    subset_npz,
    training_flops,
    warm_up,
)
from .stepper import LoopStepper


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
        from selfsup.data.views import MEAN, STD

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
