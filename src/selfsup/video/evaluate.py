"""Scoring masks and tracks against ground-truth object masks (the DAVIS protocol).

Region similarity J of a frame is the IoU of predicted and true masks (1 when both are
empty, the DAVIS convention); a sequence's J is the mean over its frames. The trivial
baseline is a centred box covering the middle half of the width and height, which is where
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
    if len(pred) != len(truth):
        raise VideoError(
            f"{name}: {len(pred)} frames but {len(truth)} ground-truth masks; use the same "
            "stride and frame range"
        )
    per_frame = jaccard(pred, truth)
    baseline = jaccard(centre_box_masks(truth.shape), truth)
    return {
        "J": float(per_frame.mean()),
        "J_centre_box": float(baseline.mean()),
        "J_per_frame": [round(float(v), 4) for v in per_frame],
        "frames": len(pred),
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
