"""Moving-object proposals: boxes around the connected components of a motion mask that are
the size and shape of an object (not a speck of noise, not half the frame)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfsup.config import param

Box = tuple[float, float, float, float]  # x, y, width, height in pixels


@dataclass
class ProposalConfig:
    min_area: float = param(
        0.004, "Smallest component kept, as a fraction of the frame area.", low=0.0
    )
    max_area: float = param(
        0.5,
        "Largest component kept, as a fraction of the frame (larger: camera-motion failure).",
        low=0.0,
        low_exclusive=True,
    )
    max_aspect: float = param(
        4.0, "Boxes longer than this many times their width (or wider) are dropped.", low=1.0
    )
    min_fill: float = param(
        0.2,
        "A component must cover this fraction of its box (drops thin sprawling shapes).",
        low=0.0,
    )
    max_per_frame: int = param(5, "At most this many proposals per frame, largest first.", low=1)


def proposals(mask: np.ndarray, cfg: ProposalConfig | None = None) -> list[Box]:
    """Boxes of the object-like connected components of an (H, W) mask, largest first."""
    import cv2

    cfg = cfg or ProposalConfig()
    _count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    frame_area = mask.shape[0] * mask.shape[1]
    boxes = []
    for x, y, w, h, area in stats[1:]:
        if not cfg.min_area * frame_area <= area <= cfg.max_area * frame_area:
            continue
        if max(w, h) > cfg.max_aspect * min(w, h) or area < cfg.min_fill * w * h:
            continue
        boxes.append((area, (float(x), float(y), float(w), float(h))))
    boxes.sort(key=lambda item: -item[0])
    return [box for _, box in boxes[: cfg.max_per_frame]]


def box_of_mask(mask: np.ndarray) -> Box | None:
    """The tight box of a mask's pixels, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return (
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    )


def box_iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def square_box(box: Box, context: float, width: int, height: int) -> tuple[int, int, int]:
    """A square (x, y, side) around a box, enlarged by `context` of its longer side and
    shifted (not cut) to stay inside the frame where it fits."""
    x, y, w, h = box
    side = min(max(w, h) * (1 + context), width, height)
    cx, cy = x + w / 2, y + h / 2
    left = round(min(max(cx - side / 2, 0), width - side))
    top = round(min(max(cy - side / 2, 0), height - side))
    return left, top, max(1, round(side))
