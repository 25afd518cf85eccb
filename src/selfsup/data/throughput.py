"""Decode throughput: images/s of stream-mode batches, GPU JPEG decoding against PIL workers.

Called by bench/gpu.py to decide when `data.decode=device` pays: with few CPU cores per GPU,
PIL workers cannot decode full-size JPEGs as fast as a GPU trains on them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from selfsup.data.formats import open_source
from selfsup.data.loader import ImageStream
from selfsup.data.sources import ImageSource


def decode_throughput(
    source: ImageSource | str | Path,
    size: int,
    *,
    decode: str,
    device: torch.device | str = "cpu",
    workers: int = 2,
    batch_size: int = 64,
    max_images: int = 1024,
) -> float:
    """Images/s that stream mode delivers as fitted (B, 3, size, size) uint8 batches.

    `decode="cpu"`: DataLoader workers decode with PIL; `"device"`: workers read the bytes and
    `device` decodes the JPEGs (nvjpeg on CUDA). One warm-up batch (worker start-up, decoder
    initialisation) is not timed, then ceil(max_images / batch_size) batches are; the clock
    stops once the device has finished. Bad images are skipped, not counted.
    """
    if not isinstance(source, ImageSource):
        source = open_source(source)
    device = torch.device(device)
    batch_size = min(batch_size, len(source))
    stream = ImageStream(
        source,
        size=size,
        batch_size=batch_size,
        mode="stream",
        decode=decode,
        device=device,
        workers=workers,
        on_bad_image="skip",
        progress=False,
        pin_memory=False,
        prefetch=0,
    )
    batches = stream.batches(0)
    try:
        next(batches)
        images, start = 0, time.perf_counter()
        for _ in range(math.ceil(max_images / batch_size)):
            images += len(next(batches)[1])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return images / (time.perf_counter() - start)
    finally:
        batches.close()
