"""Batches of fixed-size uint8 images, indexed by training step.

Batch contents depend only on (seed, step, rank, world size): the data order is a seeded
permutation per epoch, so a resumed run sees exactly the batches an uninterrupted run would,
without saving any loader state. Two modes give identical pixels:

- memory: every image is decoded once (in DataLoader workers) into one (N, 3, S, S) uint8
  tensor; a batch is an index lookup. CIFAR-10 at 32 px is 150 MB.
- stream: DataLoader workers decode and fit each batch as it is needed, for datasets that do
  not fit in memory (ImageNet-size folders).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from selfsup.data.decode import BadImageError, fit_mask_to_square, fit_to_square
from selfsup.data.sources import DataFormatError, ImageSource


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


def _collate(items: list) -> tuple[list[int], list, list]:
    indices, images, masks = zip(*items)
    return list(indices), list(images), list(masks)


@dataclass
class DecodedImages:
    """All usable images of a source at one size, with their source indices and labels."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    indices: np.ndarray  # (N,) index into the source of each row
    labels: torch.Tensor | None  # (N,) int64
    skipped: list[str]  # names of the images skipped as bad
    masks: torch.Tensor | None = None  # (N, S, S) uint8 0/1, when the source has masks


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
        loader = DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=_collate)
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
        for batch_indices, batch_images, batch_masks in loader:
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


class ImageStream:
    """Step-indexed batches of (B, 3, S, S) uint8 images (and labels, masks when the data has
    them).

    The global batch of step t is the slice [t*B*W, (t+1)*B*W) of the epoch's permutation
    (W = world size, drop-last); rank r takes its r-th block of B.
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        size: int,
        batch_size: int,
        mode: str = "auto",
        cache_max_gb: float = 4.0,
        workers: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_bad_image: str = "raise",
        small_images: str = "upscale",
        progress: bool = True,
        pin_memory: bool = False,
    ):
        self.source, self.size, self.batch_size = source, size, batch_size
        self.pin_memory = pin_memory
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.on_bad_image, self.small_images = on_bad_image, small_images
        if mode == "auto":
            needed_gb = len(source) * 3 * size * size / 2**30
            mode = "memory" if needed_gb <= cache_max_gb else "stream"
        self.mode = mode
        self.decoded: DecodedImages | None = None
        if mode == "memory":
            self.decoded = decode_all(
                source,
                size,
                workers=workers,
                on_bad_image=on_bad_image,
                small_images=small_images,
                progress=progress and rank == 0,
            )
            self.num_images = len(self.decoded.indices)
        else:
            self.num_images = len(source)
        self.steps_per_epoch = self.num_images // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise DataFormatError(
                f"{source.path}: {self.num_images} usable images is fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower data.batch_size"
            )
        self.skipped = list(self.decoded.skipped) if self.decoded else []
        self._epoch_order: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The seeded permutation of the usable images for `epoch`, drawn once per epoch:
        drawing it anew every step cost O(N) per step (15 ms for ImageNet's 1.28M images)."""
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch_order = (epoch, torch.randperm(self.num_images, generator=generator))
        return self._epoch_order[1]

    def _rows(self, step: int) -> torch.Tensor:
        """Rows (into the decoded/usable images) of this rank's batch at `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = (position * self.world_size + self.rank) * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size]

    def batches(self, start_step: int = 0) -> Iterator[tuple]:
        """Yield (step, images uint8 (B, 3, S, S), labels (B,) or None, masks uint8 0/1
        (B, S, S) or None) from `start_step` on; in page-locked memory with pin_memory."""
        batches = self._batches(start_step)
        if not self.pin_memory:
            yield from batches
            return
        # A copy to a GPU from page-locked memory is queued (non_blocking) and returns at
        # once; from ordinary memory it blocks the host until the GPU has finished the queued
        # step, so the host could not launch the next step's work ahead of the GPU.
        for step, *tensors in batches:
            yield step, *(None if t is None else t.pin_memory() for t in tensors)

    def _batches(self, start_step: int) -> Iterator[tuple]:
        if self.mode == "memory":
            decoded = self.decoded
            step = start_step
            while True:
                rows = self._rows(step)
                labels = decoded.labels[rows] if decoded.labels is not None else None
                masks = decoded.masks[rows] if decoded.masks is not None else None
                yield step, decoded.images[rows], labels, masks
                step += 1
        else:
            yield from self._stream(start_step)

    def _stream(self, start_step: int) -> Iterator:
        dataset = _FittedImages(self.source, self.size, self.on_bad_image, self.small_images)

        def sampler() -> Iterator[list[int]]:
            step = start_step
            while True:
                yield self._rows(step).tolist()
                step += 1

        loader = DataLoader(
            dataset,
            batch_sampler=sampler(),
            num_workers=self.workers,
            collate_fn=_collate,
            persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None,
        )
        labels_all = self.source.labels
        for step, (indices, images, masks) in enumerate(loader, start=start_step):
            kept = [(i, im, m) for i, im, m in zip(indices, images, masks) if im is not None]
            self.skipped += [self.source.name(i) for i, im in zip(indices, images) if im is None]
            if not kept:
                continue
            batch = torch.stack([im for _, im, _ in kept])
            labels = None
            if labels_all is not None:
                labels = torch.from_numpy(labels_all[[i for i, _, _ in kept]])
            batch_masks = None
            if self.source.masks is not None:
                batch_masks = torch.stack([m for _, _, m in kept])
            yield step, batch, labels, batch_masks

    def describe(self) -> str:
        gib = self.num_images * 3 * self.size**2 / 2**30
        return (
            f"{self.source.describe()}: {self.mode} mode, {self.size} px, "
            f"{math.ceil(gib * 1024)} MiB decoded, {self.steps_per_epoch} steps/epoch"
        )
