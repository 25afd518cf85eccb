"""The motion masks of one clip: the entry point of both methods (`motion_masks`).

Before either method looks at motion, frames that only repeat the last new frame are set aside
(they take its mask) and uniform bars along the frame's edges are cut away (nothing moves on
them); then `method=object` (objects.py) or `method=residual` (motion.py) makes the masks.
"""

from __future__ import annotations

import numpy as np

from selfsup.video.motion import (
    MotionMaskConfig,
    clean_mask,
    residual_scores,
    smooth_in_time,
    to_gray,
)
from selfsup.video.objects import object_masks
from selfsup.video.rules import RuleLog

# A pixel changed between two frames where it differs by more than REPEAT_LEVEL grey levels;
# a frame with under REPEAT_SHARE of its pixels changed repeats the last new frame. Measured:
# frames repeated through MPEG-4 (mp4v) change up to 0.005 % of their pixels, consecutive vtest
# frames (a fixed camera, walkers 2 % of the frame) at least 0.1 %.
REPEAT_LEVEL, REPEAT_SHARE = 12, 3e-4
# A letterbox or pillarbox bar varies by at most BAR_LEVEL grey levels over the whole clip (a
# few, from compression); the edge rows of the shared clips by at least 61.
BAR_LEVEL = 12


def new_frames(frames: np.ndarray) -> np.ndarray:
    """bool (T,): whether each frame changed from the last frame that did. Videos converted
    to a higher frame rate repeat frames (re-encoded, so only nearly exactly). Against a
    repeat, the flow is zero everywhere, and the object masks, which keep the smaller
    residual of a frame's two neighbours, would see nothing move in any frame. A still frame
    taken for a repeat only thins the frames out there: the next frame is compared with the
    last new one, so slow motion adds up until it shows."""
    fresh = np.ones(len(frames), bool)
    last = to_gray(frames[0]).astype(np.int16)
    for t in range(1, len(frames)):
        gray = to_gray(frames[t]).astype(np.int16)
        fresh[t] = (np.abs(gray - last) > REPEAT_LEVEL).mean() >= REPEAT_SHARE
        if fresh[t]:
            last = gray
    return fresh


def picture_box(frames: np.ndarray) -> tuple[slice, slice]:
    """(rows, columns) of the picture inside uniform strips along the frame's edges: edge
    rows and columns whose grey levels, along the whole row (column) in every frame, lie
    within BAR_LEVEL of each other: the bars of a letterbox or pillarbox (or a featureless
    strip of the scene that nothing ever crosses). The camera's motion is measured in a
    band along the frame's border; on a bar, flow is zero whatever the camera does, so the
    camera would seem still and the whole picture would move. Nothing can be seen to move
    on a uniform strip anyway."""
    low = high = to_gray(frames[0])
    for frame in frames[1:]:
        gray = to_gray(frame)
        low, high = np.minimum(low, gray), np.maximum(high, gray)
    high, low = high.astype(np.int16), low.astype(np.int16)

    def inside(spread: np.ndarray) -> slice:  # spread: per row (or column), over frames
        varies = spread > BAR_LEVEL
        if not varies.any():  # a uniform clip: no picture to look into
            return slice(0, len(varies))
        return slice(int(np.argmax(varies)), len(varies) - int(np.argmax(varies[::-1])))

    rows = inside(high.max(axis=1) - low.min(axis=1))
    return rows, inside(high.max(axis=0) - low.min(axis=0))


def motion_masks(
    frames: np.ndarray, cfg: MotionMaskConfig | None = None, log: RuleLog | None = None
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames -> (T, H, W) bool masks of moving objects (`method`).
    Object masks: a repeated frame gets the mask of the frame it repeats, and bars along the
    frame's edges are left out (method=residual keeps making the masks it always made). What
    the clip-wide rules did goes into `log`, if given."""
    import cv2

    cfg = cfg or MotionMaskConfig()
    log = log if log is not None else RuleLog()
    if len(frames) == 0:
        return np.zeros((0, *frames.shape[1:3]), bool)
    if cfg.method == "object":
        fresh = new_frames(frames)
        if not fresh.all():
            log.add(
                "repeated_frames",
                int((~fresh).sum()),
                f"under {REPEAT_SHARE:.2%} of their pixels changed by over {REPEAT_LEVEL} grey "
                "levels from the last new frame: they take its mask",
            )
            return motion_masks(frames[fresh], cfg, log)[np.cumsum(fresh) - 1]
        rows, columns = picture_box(frames)
        if rows != slice(0, frames.shape[1]) or columns != slice(0, frames.shape[2]):
            log.add(
                "bars",
                len(frames),
                f"uniform strips along the edges left out of every frame (the picture is rows "
                f"{rows.start}-{rows.stop}, columns {columns.start}-{columns.stop} of "
                f"{frames.shape[1]} x {frames.shape[2]}); their masks are empty",
            )
            masks = np.zeros(frames.shape[:3], bool)
            picture = np.ascontiguousarray(frames[:, rows, columns])
            masks[:, rows, columns] = motion_masks(picture, cfg, log)
            return masks
        small_masks = object_masks(frames, cfg, log)
    else:
        scores = smooth_in_time(residual_scores(frames, cfg), cfg.temporal_window)
        small_masks = [clean_mask(score > 1.0, cfg) for score in scores]
    h, w = frames.shape[1:3]
    masks = []
    for small in small_masks:
        masks.append(
            cv2.resize(small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        )
    return np.stack(masks)
