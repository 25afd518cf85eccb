"""Image grids as PNG files: rows of uint8 images, optionally framed in colour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

QUERY = (40, 90, 200)  # frame of a query image
SAME = (30, 150, 60)  # neighbour with the query's label
OTHER = (200, 50, 40)  # neighbour with another label
PAD = 3


def to_pil(image: torch.Tensor, cell: int) -> Image.Image:
    """(3, S, S) uint8 -> a `cell` x `cell` PIL image (nearest: keeps small images crisp)."""
    array = image.permute(1, 2, 0).contiguous().cpu().numpy()
    return Image.fromarray(array).resize((cell, cell), Image.NEAREST)


def save_grid(
    rows: Sequence[torch.Tensor],
    path: Path,
    frames: Sequence[Sequence[tuple[int, int, int] | None]] | None = None,
    min_cell: int = 64,
) -> Path:
    """Save rows of images ((n_i, 3, S, S) uint8 each) as one PNG.

    Small images are enlarged by an integer factor to at least `min_cell` px; `frames[r][c]`
    is the RGB colour of a frame around image c of row r (None: no frame).
    """
    side = rows[0].shape[-1]
    cell = side * max(1, -(-min_cell // side))  # ceil to an integer factor
    columns = max(len(r) for r in rows)
    step = cell + PAD
    canvas = Image.new("RGB", (columns * step + PAD, len(rows) * step + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            left, top = PAD + c * step, PAD + r * step
            canvas.paste(to_pil(image, cell), (left, top))
            colour = frames[r][c] if frames else None
            if colour is not None:
                box = (left - 1, top - 1, left + cell, top + cell)
                draw.rectangle(box, outline=colour, width=3)
    canvas.save(path)
    return path
