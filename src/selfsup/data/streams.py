"""What a task reads, and the one door it comes in through.

A task declares its inputs (`PretextTask.inputs()`): images from a dataset (`Images`, with the
data's labels or per-pixel masks when the task needs them) or the pairs of a patch graph
(`GraphPairs`). The training loop opens one step-indexed stream per input and hands the task
each step's fields as keyword arguments:

    Images()                          -> images (B, 3, S, S) uint8
    Images(labels=True)               -> images, labels (B,) int64
    Images(masks=True)                -> images, masks (B, S, S) uint8 0/1
    Images(path=..., prefix="motion_") -> motion_images, ...
    GraphPairs(...)                   -> patches (2B, 3, P, P) uint8, tracks (2B,) int64,
                                         pair_types (B,) int64, connected (2B, 2B) bool

Every stream fixes the batch of step t by (seed, step, rank), so a resumed run continues
exactly, whatever the task reads. Tasks hold no data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from selfsup.data.loader import ImageStream


@dataclass(frozen=True)
class Images:
    """Images of a dataset: `data.path` unless `path` is given (`key` names the setting that
    gave it, for error messages), with its labels and/or masks."""

    path: str = ""
    key: str = "data.path"
    labels: bool = False
    masks: bool = False
    prefix: str = ""  # the batch fields are named f"{prefix}images", f"{prefix}labels", ...
    about: str = "training images: pass --data PATH"  # what to give, when nothing is given


@dataclass(frozen=True)
class GraphPairs:
    """Anchor-positive pairs of a patch graph (`selfsup graph build`) over a patch set."""

    graph: str
    patches: str
    shares: tuple[float, float, float] = (1.0, 1.0, 1.0)  # of inter, intra, transitive pairs
    pairs_per_batch: int = 64


class ImageFields:
    """An ImageStream's batches as named fields on the training device."""

    def __init__(self, stream: ImageStream, wanted: Images):
        self.stream, self.wanted = stream, wanted
        self.steps_per_epoch, self.mode = stream.steps_per_epoch, stream.mode

    def batches(self, start_step: int) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        device, prefix = self.stream.device, self.wanted.prefix
        batches = self.stream.batches(start_step)
        try:
            for step, images, labels, masks in batches:
                fields = {"images": images}
                if self.wanted.labels:
                    fields["labels"] = labels
                if self.wanted.masks:
                    fields["masks"] = masks
                yield (
                    step,
                    {
                        prefix + name: tensor.to(device, non_blocking=True)
                        for name, tensor in fields.items()
                    },
                )
        finally:
            batches.close()  # stops its prefetch thread and DataLoader workers at once

    def describe(self) -> str:
        return self.stream.describe()

    @property
    def skipped(self) -> list[str]:
        return self.stream.skipped


def synthetic_fields(
    wanted: list, batch: int, size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random fields of the shapes the loop would give a task that declares `wanted`: `batch`
    images (or pairs) of side `size`, with labels (4 classes) and masks where asked. For
    sizing and testing a task without data."""

    def images(count: int) -> torch.Tensor:
        return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)

    fields: dict[str, torch.Tensor] = {}
    for request in wanted:
        if isinstance(request, GraphPairs):  # B pairs: anchors, then positives of their tracks
            fields["patches"] = images(2 * batch)
            fields["tracks"] = torch.arange(batch).repeat(2)
            fields["pair_types"] = torch.arange(batch) % 3
            pairs = torch.arange(2 * batch) % batch  # each anchor and its positive
            fields["connected"] = pairs[:, None] == pairs[None, :]
            continue
        fields[f"{request.prefix}images"] = images(batch)
        if request.labels:
            fields[f"{request.prefix}labels"] = torch.arange(batch) % 4
        if request.masks:
            masks = torch.rand(batch, size, size, generator=generator) > 0.7
            fields[f"{request.prefix}masks"] = masks.to(torch.uint8)
    return fields


def batch_items(fields: dict[str, torch.Tensor]) -> int:
    """The images (or patches) a step trains on, over all its streams."""
    return sum(
        len(tensor) for name, tensor in fields.items() if name.endswith(("images", "patches"))
    )


class Streams:
    """The streams of a task's inputs, read in step: each step's fields of all of them."""

    def __init__(self, streams: list):
        self.streams = streams
        # An epoch is the first input's: the dataset the task is about.
        self.steps_per_epoch = streams[0].steps_per_epoch

    def batches(self, start_step: int = 0) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield (step, fields of every stream). A stream that skips a step (all its images
        bad, in stream mode) skips it for all."""
        iterators = [stream.batches(start_step) for stream in self.streams]
        try:
            pending = [next(it) for it in iterators]
            while True:
                step = max(s for s, _ in pending)
                for i, it in enumerate(iterators):
                    while pending[i][0] < step:
                        pending[i] = next(it)
                if any(s != step for s, _ in pending):
                    continue  # one stream jumped further: catch the others up to it
                yield step, {name: t for _, fields in pending for name, t in fields.items()}
                pending = [next(it) for it in iterators]
        finally:
            for it in iterators:
                it.close()

    def describe(self) -> list[str]:
        return [stream.describe() for stream in self.streams]

    @property
    def skipped(self) -> list[str]:
        return [name for stream in self.streams for name in getattr(stream, "skipped", [])]

    @property
    def streamed(self) -> bool:
        """Whether some images are only met (and skipped when bad) while training."""
        return any(getattr(s, "mode", None) == "stream" for s in self.streams)
