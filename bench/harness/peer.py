"""The peer: LightlySSL's SimCLR as its CIFAR-10 benchmark writes it, stepped in this process
(`PeerSimCLR`) or in a child process (`PeerProcess`), and the peer section, which times it
against our exemplar task with InfoNCE on the same images, batch and precision. The peer runs
in one process per C heap setting of `Sizes.peer_heaps`: "system", a plain PyTorch script's
defaults (the headline ratio), and "reuse", our train.heap=reuse (like for like)."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.runtime import autocast, keep_freed_memory

from . import stepper as st
from .record import figures, portable, say
from .runner import PRECISION_NAMES, Bench

PREFIX = {"system": "peer", "reuse": "peer_reuse_heap"}  # the results' names of each heap


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


class PeerSimCLR:
    """SimCLR as LightlySSL's CIFAR-10 benchmark writes it (`peer_setup` in the results):
    its transforms over PIL images in a torch DataLoader, torchvision's ResNet-18 with the
    CIFAR stem, its projection head and NTXentLoss, SGD; channels_last and autocast as our
    loop uses them."""

    def __init__(self, images: list, batch: int, workers: int, device, amp_dtype, seed=0):
        import torchvision
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        torch.manual_seed(seed)
        self.device, self.amp_dtype = device, amp_dtype
        self.backbone = torchvision.models.resnet18()
        self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.backbone.maxpool = self.backbone.fc = nn.Identity()  # 512-d pooled output
        self.model = nn.Sequential(self.backbone, SimCLRProjectionHead(512, 512, 128))
        self.model.to(self.device, memory_format=torch.channels_last)
        self.criterion = NTXentLoss()
        lr = st.PEER_LR_PER_128 * batch / 128
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4
        )
        self.loader = torch.utils.data.DataLoader(
            PilImages(images, SimCLRTransform(input_size=32, gaussian_blur=0.0)),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        self.batches = (batch for _ in itertools.count() for batch in self.loader)  # epochs
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def _loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        x0, x1 = (
            x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            for x in (x0, x1)
        )
        with autocast(self.device, self.amp_dtype):
            return self.criterion(self.model(x0), self.model(x1))

    def _train_on(self, x0: torch.Tensor, x1: torch.Tensor) -> int:
        loss = self._loss(x0, x1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return len(x0)

    def full(self) -> int:
        return self._train_on(*next(self.batches))

    def bare(self) -> int:
        self.fixed = self.fixed or tuple(next(self.batches))
        return self._train_on(*self.fixed)

    def loader_only(self) -> int:
        return len(next(self.batches)[0])

    def close(self) -> None:
        """Stop the loader's workers now: left to the garbage collector, a forked child (a
        later DataLoader's worker) may try to stop them and print an error."""
        self.batches.close()
        self.loader = None

    def flops_per_image(self) -> float:
        x0, x1 = next(self.batches)
        self.model.train()
        return st.training_flops(self.model, lambda: self._loss(x0, x1)) / len(x0)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> (N, 512) backbone features, normalised as in training."""
        from selfsup.data import views as V

        self.backbone.eval()
        out = []
        for start in range(0, len(images), batch):
            x = V.to_float(images[start : start + batch].to(self.device))
            x = V.normalize(x, V.MEAN, V.STD).contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp_dtype):
                out.append(self.backbone(x).float())
        self.backbone.train()
        return torch.cat(out).cpu()


def minor_page_faults() -> int:
    """Minor page faults of this process so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


PEER: PeerSimCLR | None = None  # in a PeerProcess's child: the peer it steps


def start_peer(data: str, batch: int, workers: int, device: str, amp_dtype, heap: str) -> None:
    """Make this process's PEER, with train.heap=reuse's C heap settings or the defaults."""
    global PEER
    if heap == "reuse":
        keep_freed_memory()
    PEER = PeerSimCLR(decode_pil(Path(data)), batch, workers, torch.device(device), amp_dtype)


def call_peer(method: str):
    if method == "minor_page_faults":
        return minor_page_faults()
    if method == "peak_rss_mb":  # the most resident memory this process has held (KiB)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return getattr(PEER, method)()


class PeerProcess:
    """A PeerSimCLR in a child process of its own (the C heap settings are per process):
    its methods, and the child's `minor_page_faults` and `peak_rss_mb`, run there by name."""

    def __init__(self, data: Path, batch: int, workers: int, device, amp_dtype, heap: str):
        setup = (str(data), batch, workers, str(device), amp_dtype, heap)
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.pool = ProcessPoolExecutor(1, spawn, initializer=start_peer, initargs=setup)
        self.peak_rss_mb()  # the peer is made now: a failure shows here

    def __getattr__(self, method: str) -> Callable[[], object]:
        if method.startswith("_") or method == "pool":  # the object's own, never the peer's
            raise AttributeError(method)
        return lambda: self.pool.submit(call_peer, method).result()

    def close(self) -> None:
        self.pool.submit(call_peer, "close").result()
        self.pool.shutdown()


def peer_throughput(bench: Bench, ours: st.LoopStepper, peers: dict[str, PeerProcess]) -> dict:
    """Full and bare steps of both (the peer's full step with each heap setting, ours also
    compiled with --compile), alternating; then each data pipeline alone, and the minor page
    faults of one more full step of each: the cost of memory a step maps afresh."""
    peer, sizes = peers["system"], bench.sizes
    contenders: st.Contenders = {"ours_full": ours.full}
    contenders.update({f"{PREFIX[heap]}_full": process.full for heap, process in peers.items()})
    contenders.update(ours_bare=ours.bare, peer_bare=peer.bare)
    if bench.compile:
        contenders["ours_compiled_full"] = ours.compiled().full
    first = st.warm_up(contenders, sizes.warmup, bench.device)
    rates = st.alternate(contenders, sizes.windows, sizes.peer_window_steps, bench.device)
    data_only = {"ours_views": ours.views_only, "peer_loader": peer.loader_only}
    data_rates = st.alternate(data_only, sizes.windows, sizes.peer_window_steps, bench.device)
    counters = {"ours_full": minor_page_faults}
    counters.update({f"{PREFIX[heap]}_full": p.minor_page_faults for heap, p in peers.items()})
    faults = {}
    for name, count in counters.items():
        before = count()
        contenders[name]()
        faults[name] = count() - before
    speed = {name: value["images_per_sec"] for name, value in {**rates, **data_rates}.items()}

    def ratio(ours: str, theirs: str) -> float:
        return round(speed[ours] / speed[theirs], 3)

    ratios = {
        f"ratio_ours_over_{PREFIX[h]}": ratio("ours_full", f"{PREFIX[h]}_full") for h in peers
    }
    ratios["bare_ratio_ours_over_peer"] = ratio("ours_bare", "peer_bare")
    if bench.compile:
        ratios["compiled_ratio_ours_over_peer"] = ratio("ours_compiled_full", "peer_full")
        ratios["compile_seconds"] = first["ours_compiled_full"]
    return {
        **{f"{name}_images_per_sec": value for name, value in speed.items() if name in rates},
        **ratios,
        **{f"{name}_images_per_sec": speed[name] for name in data_rates},
        "minor_page_faults_per_step": faults,
        # The heap setting's memory cost: each peer process's peak (same model and batch).
        "peer_peak_rss_mb": {heap: process.peak_rss_mb() for heap, process in peers.items()},
        "first_step_seconds": first,
        "windows": {name: value["windows"] for name, value in {**rates, **data_rates}.items()},
    }


def peer_section(bench: Bench) -> dict:
    try:
        import lightly
    except ImportError:  # the other sections still run
        why = "LightlySSL is not installed: pip install -e '.[bench]' (gpu.py --prepare carries it)"
        say(f"  skipped: {why}")
        return {"skipped": why}
    data, batch = bench.data["cifar"], bench.sizes.peer_batch
    argv = [*st.task_argv(st.INFONCE, data, bench.sizes), *bench.extra]
    # Each at its own default precision: ours as `train.precision=auto` chooses (on a CPU,
    # measured on this very step), the peer as a plain script runs (fp32 on a CPU, the GPU's
    # autocast on a GPU).
    peer_dtype = bench.amp_dtype if bench.device.type == "cuda" else None
    setup = (data, batch, bench.peer_workers, bench.device, peer_dtype)
    with st.run_folder() as folder:
        cfg = st.loop_config(argv)
        ours = st.LoopStepper(cfg, folder, choose_precision=True)
        peers = {heap: PeerProcess(*setup, heap=heap) for heap in bench.sizes.peer_heaps}
        flops = {"ours": ours.flops_per_image(), "peer": peers["system"].flops_per_image()}
        result = peer_throughput(bench, ours, peers)
        for process in peers.values():
            process.close()
    out = {
        "what": "images/s of LightlySSL SimCLR (own transforms, torch DataLoader, torchvision "
        "CIFAR ResNet-18) against our exemplar task with InfoNCE (pre-activation ResNet-18, "
        "small stem), alternating timed windows; bare: fwd + bwd + step on one in-memory batch. "
        "The peer runs in processes of its own: with the C heap's defaults, as a plain script "
        "gets them (peer_*), and where the profile asks, with our train.heap=reuse setting "
        "(peer_reuse_heap_*)",
        "data": portable([data]),
        "ours_heap": cfg.train.heap,
        "batch": batch,
        "image_size": 32,
        "precision": PRECISION_NAMES[ours.amp_dtype],
        "peer_precision": PRECISION_NAMES[peer_dtype],
        # On a CPU, the rates auto measured for ours in each dtype before choosing.
        "ours_precision_rates": ours.precision_choice and ours.precision_choice.rates,
        "channels_last": True,
        "lightly": lightly.__version__,
        "peer_workers": bench.peer_workers,
        "peer_setup": "SimCLRTransform(input_size=32, gaussian_blur=0.0); torchvision resnet18 "
        "with conv1 3x3/1, no maxpool, fc=Identity; SimCLRProjectionHead(512, 512, 128); "
        f"NTXentLoss(temperature=0.5); SGD(lr={st.PEER_LR_PER_128 * batch / 128:g}, "
        "momentum=0.9, weight_decay=5e-4); one forward per view",
        "ours_command": st.command_text(argv),
        "train_flops_per_image": flops,
        **result,
    }
    shown = ("ratio_ours_over_peer", "ratio_ours_over_peer_reuse_heap", "bare_ratio_ours_over_peer")
    precisions = f"ours {out['precision']}, peer {out['peer_precision']}"
    say(f"  [{precisions}] {figures(out, *shown, 'compiled_ratio_ours_over_peer')}")
    say(f"  images/s: {figures(out, *(key for key in out if key.endswith('images_per_sec')))}")
    say(f"  {figures(out, 'peer_peak_rss_mb', 'minor_page_faults_per_step')}")
    return out
