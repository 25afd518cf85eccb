"""RGB-D frames in memory at an evaluation resolution, and their split by frame index.

Frames are resized whole (no crop) so the shorter side is `size`: colour with antialiased
bilinear filtering, depth by averaging only the valid readings under each output pixel (a pixel
is valid when at least half of what it covers was measured). Averaging invalid zeros into
depth would invent distances at every hole's border; nearest-neighbour would alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from selfsup.data import DataFormatError
from selfsup.data.decode import fitted_shape
from selfsup.dense.geometry import scale_intrinsics
from selfsup.dense.rgbd_sources import open_rgbd_source


@dataclass
class RgbdFrames:
    """Consecutive frames, all at one resolution."""

    name: str
    images: torch.Tensor  # (N, 3, H, W) uint8
    depth: torch.Tensor  # (N, H, W) float32 metres, 0 = invalid
    intrinsics: torch.Tensor | None  # (3, 3) at (H, W); None when the data has none
    registered: bool = True  # False: colour and depth cameras are not aligned (7-Scenes)
    indices: list[int] = field(default_factory=list)  # frame index in the source

    def __len__(self) -> int:
        return len(self.images)

    @property
    def valid(self) -> torch.Tensor:
        return self.depth > 0  # (N, H, W) bool

    def subset(self, rows: list[int]) -> RgbdFrames:
        return RgbdFrames(
            self.name,
            self.images[rows],
            self.depth[rows],
            self.intrinsics,
            self.registered,
            [self.indices[r] for r in rows],
        )


def resize_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) uint8, antialiased bilinear."""
    image = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float()
    if tuple(image.shape[-2:]) != shape:
        image = F.interpolate(image, size=shape, mode="bilinear", antialias=True)
    return image[0].round().clamp(0, 255).to(torch.uint8)


def resize_depth(depth: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """(H, W) metres (0 = invalid) -> (h, w): the mean of the valid readings under each output
    pixel, 0 where fewer than half of them are valid."""
    metres = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    if tuple(metres.shape[-2:]) == shape:
        return metres[0, 0]
    valid = (metres > 0).float()
    total = F.interpolate(metres * valid, size=shape, mode="area")
    covered = F.interpolate(valid, size=shape, mode="area")  # fraction of valid readings
    mean = total / covered.clamp_min(1e-6)
    return torch.where(covered >= 0.5, mean, torch.zeros_like(mean))[0, 0]


def load_rgbd(
    path: str | Path, size: int, depth_scale: float = 0.001, progress: bool = True
) -> RgbdFrames:
    """Every frame of `path`, shorter side resized to `size` px (aspect kept, no crop)."""
    source = open_rgbd_source(path, depth_scale)
    if len(source) == 0:
        raise DataFormatError(f"{path}: holds no frames")
    images, depths, full_shape = [], [], None
    for index in tqdm(range(len(source)), desc=f"{Path(path).name} RGB-D", disable=not progress):
        rgb, depth = source.load(index)
        if full_shape is None:
            full_shape = rgb.shape[:2]
        elif rgb.shape[:2] != full_shape:
            raise DataFormatError(
                f"{source.name(index)}: frame is {rgb.shape[1]}x{rgb.shape[0]} but the first "
                f"frame is {full_shape[1]}x{full_shape[0]}; all frames must share one size"
            )
        shape = fitted_shape(*full_shape, size)
        images.append(resize_rgb(rgb, shape))
        depths.append(resize_depth(depth, shape))
    intrinsics = None
    if source.intrinsics is not None:
        intrinsics = scale_intrinsics(torch.from_numpy(source.intrinsics), full_shape, shape)
    return RgbdFrames(
        str(path),
        torch.stack(images),
        torch.stack(depths),
        intrinsics,
        source.registered,
        list(range(len(source))),
    )


def split_by_index(frames: RgbdFrames, train_fraction: float) -> tuple[RgbdFrames, RgbdFrames]:
    """First `train_fraction` of the frames (in order) for training, the rest for testing.

    Never at random: neighbouring video frames are near-duplicates, so a random split would
    test on frames the decoder has all but seen.
    """
    if not 0 < train_fraction < 1:
        raise DataFormatError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    cut = round(len(frames) * train_fraction)
    if cut < 1 or cut >= len(frames):
        raise DataFormatError(
            f"{frames.name}: {len(frames)} frames cannot be split {train_fraction:g} / "
            f"{1 - train_fraction:g} with frames on both sides"
        )
    return frames.subset(list(range(cut))), frames.subset(list(range(cut, len(frames))))
