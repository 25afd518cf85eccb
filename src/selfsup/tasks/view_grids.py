"""Pictures of what a task trains on: its views as labelled image grids.

`PretextTask.view_grids(views)` returns {name: grid}, one (3, H, W) float image in [0, 1] per
kind of view, which `train.logger=tensorboard` writes every `train.image_every` steps. Each
tile is one view of the batch, upscaled (nearest) to at least `MIN_TILE` px, with its label
(a rotation angle, a relative position, a permutation index) written under it.

    >>> images = torch.rand(6, 3, 16, 16)
    >>> labelled_grid(images, ["a", "b", "c", "d", "e", "f"], columns=3).shape
    torch.Size([3, 142, 206])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.views import MEAN, STD

MIN_TILE = 64  # px: a 16 px tile is upscaled 4x, so a person can see it
LABEL_HEIGHT = 12  # px under each tile for its label
PAD = 2  # px between tiles


def display(x: torch.Tensor, standardized: bool = False) -> torch.Tensor:
    """Views normalised with the ImageNet mean and std (B, 3, H, W) -> RGB in [0, 1], on
    the CPU; `standardized` views (each image and channel to zero mean, unit std) are
    stretched per image instead, as what is left of their colours is relative."""
    x = x.detach().float().cpu()
    if standardized:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        return (x - low) / (high - low).clamp_min(1e-6)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def labelled_grid(
    images: torch.Tensor, labels: Sequence[str] | None = None, columns: int = 8
) -> torch.Tensor:
    """RGB images in [0, 1] (N, 3, h, w) -> one grid image (3, H, W) in [0, 1], `columns`
    tiles a row, each with its label (if given) under it."""
    from PIL import Image, ImageDraw

    images = images.detach().float().cpu().clamp(0, 1)
    count, _, height, width = images.shape
    scale = max(1, -(-MIN_TILE // max(height, width)))  # ceil: at least MIN_TILE px
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    tile_h, tile_w = images.shape[-2:]
    label_h = LABEL_HEIGHT if labels is not None else 0
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    canvas = Image.new(
        "RGB",
        (columns * (tile_w + PAD) + PAD, rows * (tile_h + label_h + PAD) + PAD),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        left, top = PAD + column * (tile_w + PAD), PAD + row * (tile_h + label_h + PAD)
        canvas.paste(Image.fromarray(pixels[index]), (left, top))
        if labels is not None:
            draw.text((left + 1, top + tile_h), str(labels[index]), fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255
