"""Scoring masks and tracks against ground-truth object masks (the DAVIS protocol).

The DAVIS 2016 benchmark (Perazzi et al., CVPR 2016) scores each frame at the ground truth's
resolution (480p), so predicted masks are resized up to it (`upsample_masks`), and with two
measures:

- **region similarity J**: the IoU of predicted and true masks (1 when both are empty);
- **contour accuracy F**: the F-measure of the two masks' boundaries, a boundary pixel
  matching when the other boundary lies within a tolerance of 0.008 of the image diagonal
  (a disk of ceil(0.008 x diagonal) px, 8 px at 854 x 480): F = 2PR / (P + R), P the
  share of the predicted boundary near the true one, R the share of the true boundary
  near the predicted one.

Over a sequence's frames each measure gives three statistics (`statistics`, as the DAVIS
toolkit computes them): the **mean**, the **recall** (share of frames scoring over 0.5)
and the **decay** (mean over the first of four temporal bins minus mean over the last:
how much worse it gets with time). J&F is the mean of the two means. The trivial baseline
is a centred box covering the middle half of the width and height, which is where
photographers put objects: a method has to beat it to have found anything.

Tracks are scored against the ground-truth box (the tight box of the true mask) of each
frame they cover: mean IoU along the track, and survival, the number of frames followed
before the track was lost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.video.proposals import Box, box_iou, box_of_mask
from selfsup.video.reader import ReadOptions, VideoError, iter_frames


def jaccard(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame IoU of (T, H, W) boolean masks."""
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, true {truth.shape}")
    inter = (pred & truth).sum((1, 2))
    union = (pred | truth).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def centre_box_masks(shape: tuple[int, int, int]) -> np.ndarray:
    _t, h, w = shape
    masks = np.zeros(shape, bool)
    masks[:, h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    return masks


BOUNDARY_TOLERANCE = 0.008  # of the image diagonal: the DAVIS benchmark's bound_th


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """(T, H, W) bool -> the masks' boundary pixels, as the DAVIS toolkit marks them (its
    seg2bmap): a pixel whose east, south or south-east neighbour differs from it; along
    the last row (column) only the east (south) neighbour counts."""
    east, south, south_east = (np.zeros_like(masks) for _ in range(3))
    east[:, :, :-1] = masks[:, :, 1:]
    south[:, :-1] = masks[:, 1:]
    south_east[:, :-1, :-1] = masks[:, 1:, 1:]
    boundary = (masks ^ east) | (masks ^ south) | (masks ^ south_east)
    boundary[:, -1, :] = masks[:, -1, :] ^ east[:, -1, :]
    boundary[:, :, -1] = masks[:, :, -1] ^ south[:, :, -1]
    boundary[:, -1, -1] = False
    return boundary


def tolerance_disk(height: int, width: int) -> np.ndarray:
    """The disk a boundary is dilated with: radius ceil(BOUNDARY_TOLERANCE x diagonal),
    the pixels within that distance of the centre (skimage's `disk`)."""
    radius = int(np.ceil(BOUNDARY_TOLERANCE * np.hypot(height, width)))
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_measure(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame contour precision, recall and F of (T, H, W) boolean masks: (T, 3).
    Without a predicted boundary, precision is 1 and recall 0 (both 1 when neither mask
    has one); without a true boundary, precision is 0 and recall 1."""
    import cv2

    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, true {truth.shape}")
    disk = tolerance_disk(*truth.shape[1:])
    out = np.zeros((len(pred), 3))
    for t, (found, true) in enumerate(zip(boundary_map(pred), boundary_map(truth))):
        n_found, n_true = int(found.sum()), int(true.sum())
        if n_found == 0 or n_true == 0:
            precision, recall = float(n_found == 0), float(n_true == 0)
        else:
            near_true = cv2.dilate(true.astype(np.uint8), disk) > 0
            near_found = cv2.dilate(found.astype(np.uint8), disk) > 0
            precision = (found & near_true).sum() / n_found
            recall = (true & near_found).sum() / n_true
        both = precision + recall
        out[t] = precision, recall, 2 * precision * recall / both if both > 0 else 0.0
    return out


def statistics(per_frame: np.ndarray) -> dict:
    """A measure's mean, recall (share of frames over 0.5) and decay over a sequence, as the
    DAVIS toolkit computes them: the frames split into four temporal bins at
    round(linspace(1, T, 5)) - 1 (neighbouring bins share their edge frame), decay the mean
    of the first bin minus that of the last."""
    per_frame = np.asarray(per_frame, float)
    edges = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(int)
    bins = [per_frame[edges[i] : edges[i + 1] + 1] for i in range(4)]
    return {
        "mean": float(per_frame.mean()),
        "recall": float((per_frame > 0.5).mean()),
        "decay": float(bins[0].mean() - bins[3].mean()),
    }


def upsample_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(T, h, w) bool masks resized to (H, W) as smooth outlines: bilinear, then over half
    (nearest neighbour would score the staircase of the small masks' pixels)."""
    import cv2

    if masks.shape[1:] == tuple(shape):
        return masks
    return np.stack([
        cv2.resize(m.astype(np.float32), shape[::-1], interpolation=cv2.INTER_LINEAR) > 0.5
        for m in masks
    ])  # fmt: skip


def read_masks(
    path: str | Path, options: ReadOptions, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Ground-truth masks (a folder of PNGs, like a frame folder) as (T, H, W) bool, resized
    (nearest) to `shape` if given."""
    import cv2

    masks = []
    for frame in iter_frames(path, options):
        mask = frame.max(-1) > 127
        if shape is not None and mask.shape != shape:
            mask = cv2.resize(
                mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST
            ).astype(bool)
        masks.append(mask)
    return np.stack(masks)


def score_masks(pred: np.ndarray, truth: np.ndarray, name: str) -> dict:
    """J and F of predicted masks against the truth, at the truth's resolution (the masks
    resized up to it), with their DAVIS statistics and the centre box's J and F."""
    if len(pred) != len(truth):
        raise VideoError(
            f"{name}: {len(pred)} frames but {len(truth)} ground-truth masks; use the same "
            "stride and frame range"
        )
    pred = upsample_masks(pred, truth.shape[1:])
    box = centre_box_masks(truth.shape)
    region, contour = jaccard(pred, truth), boundary_measure(pred, truth)[:, 2]
    j, f = statistics(region), statistics(contour)
    return {
        "J": j["mean"],
        "J_recall": j["recall"],
        "J_decay": j["decay"],
        "F": f["mean"],
        "F_recall": f["recall"],
        "F_decay": f["decay"],
        "JF": (j["mean"] + f["mean"]) / 2,
        "J_centre_box": float(jaccard(box, truth).mean()),
        "F_centre_box": float(boundary_measure(box, truth)[:, 2].mean()),
        "J_per_frame": [round(float(v), 4) for v in region],
        "F_per_frame": [round(float(v), 4) for v in contour],
        "frames": len(pred),
        "truth_size": list(truth.shape[1:]),
    }


def score_track(path: list[tuple[int, Box]], truth: np.ndarray) -> dict:
    """IoU with the ground-truth box along a track, and how long it survived."""
    ious = []
    for t, box in path:
        true_box = box_of_mask(truth[t])
        ious.append(box_iou(box, true_box) if true_box is not None else 0.0)
    return {"start": path[0][0], "length": len(path), "mean_iou": float(np.mean(ious))}


def score_tracking(
    frames: np.ndarray, masks: np.ndarray, paths: list[list], truth: np.ndarray, tracker_cfg
) -> dict:
    """Two views of tracking quality on a video with ground truth:

    - `from_truth`: the tracker seeded with the true box on the first frame where the object
      is visible: IoU along the track and the fraction of the remaining frames it survived;
    - `proposals`: the pipeline's own tracks (`paths`); those whose seed box overlaps the
      true box (IoU >= 0.3) are on the object, and are scored the same way.
    """
    from selfsup.video.track import track

    visible = [t for t in range(len(truth)) if truth[t].any()]
    result: dict = {}
    if visible:
        start = visible[0]
        path = track(frames, start, box_of_mask(truth[start]), tracker_cfg, masks)
        scored = score_track(path, truth)
        scored["survival"] = len(path) / min(len(frames) - start, tracker_cfg.max_length)
        result["from_truth"] = scored
    on_object = [
        score_track(p, truth)
        for p in paths
        if box_of_mask(truth[p[0][0]]) is not None
        and box_iou(p[0][1], box_of_mask(truth[p[0][0]])) >= 0.3
    ]
    result["proposals"] = {
        "tracks": len(paths),
        "on_object": len(on_object),
        "mean_iou": float(np.mean([s["mean_iou"] for s in on_object])) if on_object else None,
        "mean_length": float(np.mean([s["length"] for s in on_object])) if on_object else None,
    }
    return result
