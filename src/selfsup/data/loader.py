"""Batches of fixed-size uint8 images, indexed by training step.

Batch contents depend only on (seed, step, rank, world size): the data order is a seeded
permutation per epoch (`selfsup.data.order`), so a resumed run sees exactly the batches an
uninterrupted run would, without saving any loader state. Three modes give identical pixels:

- device: every image is decoded once into one (N, 3, S, S) uint8 tensor that lives on the
  training GPU; a batch is an `index_select` there, so no image crosses the PCIe bus after
  start-up and the host never waits. CIFAR-10 at 32 px is 150 MB.
- memory: the same tensor in host memory; a background thread gathers and page-locks the next
  batches, so their copies to the GPU are queued without blocking the host.
- stream: DataLoader workers decode and fit each batch as it is needed, for datasets that do
  not fit in memory (ImageNet-size folders); with `decode="device"` the workers only read the
  JPEG bytes and the GPU decodes them (see `device_decode`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from selfsup.data.decode import BadImageError, fit_mask_to_square, fit_to_square
from selfsup.data.device_decode import DeviceJpegDecoder, EncodedImages
from selfsup.data.order import EpochOrder
from selfsup.data.prefetch import prefetch
from selfsup.data.sources import DataFormatError, ImageSource
from selfsup.data.worker_errors import load_batches


class _FittedImages(Dataset):
    """source[i] -> (i, (3, S, S) uint8 or None when skipped as bad, (S, S) uint8 mask or None
    when the source has no masks)."""

    def __init__(self, source: ImageSource, size: int, on_bad_image: str, small_images: str):
        self.source, self.size = source, size
        self.on_bad_image, self.small_images = on_bad_image, small_images

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        try:
            array = self.source.load(index, min_size=self.size)
            image = fit_to_square(array, self.size, self.source.name(index), self.small_images)
        except BadImageError:
            if self.on_bad_image == "raise":
                raise
            return index, None, None
        masks = self.source.masks
        return index, image, None if masks is None else fit_mask_to_square(masks[index], self.size)


def _collate(items: list) -> tuple[list, ...]:
    """Per-image tuples -> one list per field (images may differ in size or be None)."""
    return tuple(list(column) for column in zip(*items))


@dataclass
class DecodedImages:
    """All usable images of a source at one size, with their source indices and labels."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    indices: np.ndarray  # (N,) index into the source of each row
    labels: torch.Tensor | None  # (N,) int64
    skipped: list[str]  # names of the images skipped as bad
    masks: torch.Tensor | None = None  # (N, S, S) uint8 0/1, when the source has masks

    def to(self, device: torch.device) -> DecodedImages:
        """The same images, labels and masks on `device`."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return dataclasses.replace(
            self, images=move(self.images), labels=move(self.labels), masks=move(self.masks)
        )


def decode_all(
    source: ImageSource,
    size: int,
    *,
    workers: int = 2,
    on_bad_image: str = "raise",
    small_images: str = "upscale",
    progress: bool = True,
) -> DecodedImages:
    """Decode and fit every image of `source` to (3, size, size) uint8, in parallel workers."""
    array = source.decoded_array()
    has_masks = source.masks is not None
    if array is not None and array.shape[1:3] == (size, size):
        # Already decoded at the right size: no per-image work at all.
        images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()
        masks = torch.from_numpy(source.masks) if has_masks else None
        indices = np.arange(len(source))
    else:
        dataset = _FittedImages(source, size, on_bad_image, small_images)
        batches = load_batches(dataset, batch_size=256, num_workers=workers, collate_fn=_collate)
        images = torch.empty(len(source), 3, size, size, dtype=torch.uint8)
        masks = torch.empty(len(source), size, size, dtype=torch.uint8) if has_masks else None
        keep = np.zeros(len(source), dtype=bool)
        bar = tqdm(
            total=len(source),
            desc=f"decoding {source.path.name}",
            unit="img",
            disable=not progress,
            leave=False,
        )
        for batch_indices, batch_images, batch_masks in batches:
            for index, image, mask in zip(batch_indices, batch_images, batch_masks):
                if image is not None:
                    images[index], keep[index] = image, True
                if mask is not None:
                    masks[index] = mask
            bar.update(len(batch_indices))
        bar.close()
        indices = np.flatnonzero(keep)
        if not keep.all():
            images = images[torch.from_numpy(indices)]
            masks = masks[torch.from_numpy(indices)] if has_masks else None
    skipped = [source.name(i) for i in np.setdiff1d(np.arange(len(source)), indices)]
    if len(indices) == 0:
        raise DataFormatError(f"{source.path}: none of the {len(source)} images could be used")
    labels = None
    if source.labels is not None:
        labels = torch.from_numpy(source.labels[indices])
    return DecodedImages(images, indices, labels, skipped, masks)


def decoded_gib(num_images: int, size: int, has_masks: bool = False) -> float:
    """GiB that `num_images` decoded (3, size, size) uint8 images (and masks) take."""
    return num_images * (3 + has_masks) * size * size / 2**30


def choose_cache(
    cache: str,
    *,
    needed_gb: float,
    device_type: str,
    cache_max_gb: float,
    device_cache_max_gb: float,
) -> str:
    """Resolve `data.cache` to `device`, `memory` or `stream` for a training device type.

    `auto`: on the GPU when training on CUDA and the decoded data fits in
    `device_cache_max_gb`, else in host memory when it fits in `cache_max_gb`, else streamed.
    On a CPU `device` is `memory`: host memory is the training device's memory there.
    """
    if cache == "auto":
        if device_type == "cuda" and needed_gb <= device_cache_max_gb:
            return "device"
        return "memory" if needed_gb <= cache_max_gb else "stream"
    if cache == "device" and device_type != "cuda":
        return "memory"
    if cache not in ("device", "memory", "stream"):
        raise ValueError(f"data.cache: {cache!r} is not one of auto, device, memory, stream")
    return cache


def _pin(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Page-lock a host tensor; GPU tensors (device cache, device decode) stay as they are."""
    if tensor is None or tensor.device.type != "cpu":
        return tensor
    return tensor.pin_memory()


class ImageStream:
    """Step-indexed batches of (B, 3, S, S) uint8 images (and labels, masks when the data has
    them).

    The rows of step t are those of `EpochOrder`: the slice [t*B*W, (t+1)*B*W) of the
    epoch's permutation (W = world size, drop-last), rank r taking its r-th block of B.
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        size: int,
        batch_size: int,
        mode: str = "auto",
        cache_max_gb: float = 4.0,
        device_cache_max_gb: float = 8.0,
        decode: str = "cpu",
        device: torch.device | str = "cpu",
        workers: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_bad_image: str = "raise",
        small_images: str = "upscale",
        progress: bool = True,
        pin_memory: bool | None = None,
        prefetch: int | None = None,
    ):
        """`device`: the training device. `pin_memory` (default: when `device` is CUDA)
        page-locks host batches; `prefetch` (default: 2 on CUDA unless the cache is on the
        device, else 0) is how many batches a background thread prepares ahead."""
        if decode not in ("cpu", "device"):
            raise ValueError(f"data.decode: {decode!r} is not one of cpu, device")
        self.source, self.size, self.batch_size = source, size, batch_size
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.on_bad_image, self.small_images = on_bad_image, small_images
        self.device, self.decode = torch.device(device), decode
        on_cuda = self.device.type == "cuda"
        self.mode = choose_cache(
            mode,
            needed_gb=decoded_gib(len(source), size, source.masks is not None),
            device_type=self.device.type,
            cache_max_gb=cache_max_gb,
            device_cache_max_gb=device_cache_max_gb,
        )
        self.pin_memory = on_cuda if pin_memory is None else pin_memory
        # With the cache on the GPU a batch is one kernel launch: nothing to prepare ahead.
        self.prefetch = (
            (2 if on_cuda and self.mode != "device" else 0) if prefetch is None else prefetch
        )
        # Where batches are gathered: the epoch permutation lives there too.
        self.gather_device = self.device if self.mode == "device" else torch.device("cpu")
        self.decoded: DecodedImages | None = None
        if self.mode in ("device", "memory"):
            self.decoded = decode_all(
                source,
                size,
                workers=workers,
                on_bad_image=on_bad_image,
                small_images=small_images,
                progress=progress and rank == 0,
            ).to(self.gather_device)
            self.num_images = len(self.decoded.indices)
        else:
            self.num_images = len(source)
        self.order = EpochOrder(
            self.num_images,
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            device=self.gather_device,
        )
        self.steps_per_epoch = self.order.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise DataFormatError(
                f"{source.path}: {self.num_images} usable images is fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower data.batch_size"
            )
        self.skipped = list(self.decoded.skipped) if self.decoded else []

    def batches(self, start_step: int = 0) -> Iterator[tuple]:
        """Yield (step, images uint8 (B, 3, S, S), labels (B,) or None, masks uint8 0/1
        (B, S, S) or None) from `start_step` on.

        Tensors are on the training device in device mode (and images with decode=device);
        host tensors are page-locked with pin_memory. With prefetch, a background thread
        makes them; an error there (a BadImageError naming the file) is raised here.
        """
        batches = self._batches(start_step)
        if self.pin_memory:
            # A copy to a GPU from page-locked memory is queued (non_blocking) and returns at
            # once; from ordinary memory it blocks the host until the GPU has finished the
            # queued step, so the host could not launch the next step's work ahead of the GPU.
            batches = ((step, *map(_pin, tensors)) for step, *tensors in batches)
        yield from prefetch(batches, self.prefetch, self.device)

    def _batches(self, start_step: int) -> Iterator[tuple]:
        if self.mode == "stream":
            yield from self._stream(start_step)
            return
        tensors = (self.decoded.images, self.decoded.labels, self.decoded.masks)
        step = start_step
        while True:
            rows = self.order.rows(step)  # on the gather device: no host-device traffic per step
            yield step, *(None if t is None else t.index_select(0, rows) for t in tensors)
            step += 1

    def _stream(self, start_step: int) -> Iterator:
        fitted = _FittedImages(self.source, self.size, self.on_bad_image, self.small_images)
        on_device = self.decode == "device"
        decoder = DeviceJpegDecoder(fitted, self.device) if on_device else None

        def sampler() -> Iterator[list[int]]:
            step = start_step
            while True:
                yield self.order.rows(step).tolist()
                step += 1

        batches = load_batches(
            EncodedImages(fitted) if on_device else fitted,
            batch_sampler=sampler(),
            num_workers=self.workers,
            collate_fn=_collate,
            persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None,
        )
        for step, columns in enumerate(batches, start=start_step):
            if decoder is not None:
                columns = decoder.fill(*columns)
            batch = self._assemble(*columns)
            if batch is not None:
                yield step, *batch

    def _assemble(self, indices: list[int], images: list, masks: list) -> tuple | None:
        """Stack the usable images of one batch (None: skipped as bad) with their labels and
        masks; None when none is usable."""
        kept = [(i, im, m) for i, im, m in zip(indices, images, masks) if im is not None]
        self.skipped += [self.source.name(i) for i, im in zip(indices, images) if im is None]
        if not kept:
            return None
        batch = torch.stack([im for _, im, _ in kept])
        labels = None
        if self.source.labels is not None:
            labels = torch.from_numpy(self.source.labels[[i for i, _, _ in kept]])
        batch_masks = None
        if self.source.masks is not None:
            batch_masks = torch.stack([m for _, _, m in kept])
        return batch, labels, batch_masks

    def describe(self) -> str:
        gib = self.num_images * 3 * self.size**2 / 2**30
        where = f" on {self.device}" if self.mode == "device" else ""
        decode = (
            f", JPEGs decoded on {self.device}"
            if self.mode == "stream" and self.decode == "device"
            else ""
        )
        return (
            f"{self.source.describe()}: {self.mode} mode{where}{decode}, {self.size} px, "
            f"{math.ceil(gib * 1024)} MiB decoded, {self.steps_per_epoch} steps/epoch"
        )
