"""The peer: LightlySSL's SimCLR as its CIFAR-10 benchmark writes it, stepped in this process
(`PeerSimCLR`) or in a child process of its own (`PeerProcess`)."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import resource
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.runtime import autocast, keep_freed_memory

from .commands import PEER_LR_PER_128
from .timing import training_flops


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


class PeerSimCLR:
    """SimCLR as LightlySSL's CIFAR-10 benchmark writes it: SimCLRTransform(input_size=32,
    gaussian_blur=0) over PIL images in a torch DataLoader, the CIFAR ResNet-18,
    SimCLRProjectionHead(512, 512, 128), NTXentLoss (temperature 0.5), SGD; one forward per
    view. channels_last and autocast as our loop uses them."""

    def __init__(
        self, images: list, batch: int, workers: int, device: torch.device, amp_dtype, seed=0
    ):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        torch.manual_seed(seed)
        self.device, self.amp_dtype = device, amp_dtype
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


PEER: PeerSimCLR | None = None  # in a PeerProcess's child: the peer it steps


def start_peer(data: str, batch: int, workers: int, device: str, amp_dtype, heap: str) -> None:
    """Make this process's PEER, with `selfsup train`'s C heap settings (heap="reuse") or
    with the defaults a plain PyTorch script gets (heap="system")."""
    global PEER
    if heap == "reuse":
        keep_freed_memory()
    PEER = PeerSimCLR(decode_pil(Path(data)), batch, workers, torch.device(device), amp_dtype)


def call_peer(method: str):
    own = {"minor_page_faults": minor_page_faults, "peak_rss_mb": peak_rss_mb}
    return own[method]() if method in own else getattr(PEER, method)()


class PeerProcess:
    """A PeerSimCLR in a child process of its own, as the C heap settings are per process:
    its methods, and the child's `minor_page_faults` and `peak_rss_mb`, called by name
    (`peer.full()`), run there."""

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
