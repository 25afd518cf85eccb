"""Following a proposal through a video with a visual tracker (OpenCV's CSRT by default: the
most accurate of its classic trackers; KCF and MIL are faster), stopping when it is lost.

A track is lost when the tracker reports failure, when its box leaves the frame (less than
`min_inside` of it visible), when the box shrinks below `min_size` pixels or grows past
`max_growth` times its first area (trackers that drift onto the background tend to grow),
when the motion masks (if given) see less than `min_motion` of the box moving for
`motion_patience` frames in a row (the tracker has drifted onto static background, or the
object stopped, and it is no longer a moving-object proposal), or after `max_length` frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfsup.config import param
from selfsup.video.proposals import Box
from selfsup.video.reader import VideoError

TRACKERS = ("csrt", "kcf", "mil")


@dataclass
class TrackConfig:
    tracker: str = param(
        "csrt", "OpenCV tracker: csrt (accurate), kcf or mil (faster).", choices=TRACKERS
    )
    max_length: int = param(30, "Frames a track follows its object at most.", low=1)
    min_size: int = param(8, "A box narrower or lower than this (px) is lost.", low=1)
    min_inside: float = param(
        0.5, "A box with less than this fraction inside the frame is lost.", low=0.0
    )
    max_growth: float = param(4.0, "A box whose area grows past this factor is lost.", low=1.0)
    min_motion: float = param(
        0.05, "A box with less than this fraction of moving pixels (motion masks) ...", low=0.0
    )
    motion_patience: int = param(3, "... for this many frames in a row is lost.", low=1)


# OpenCV's class of each tracker; CSRT and KCF come with its contrib modules only.
OPENCV_TRACKERS = {"csrt": "TrackerCSRT", "kcf": "TrackerKCF", "mil": "TrackerMIL"}


def tracker_available(name: str) -> bool:
    """Whether the installed OpenCV has tracker `name` (one of TRACKERS)."""
    import cv2

    return hasattr(cv2, OPENCV_TRACKERS[name])


def make_tracker(name: str):
    import cv2

    if not tracker_available(name):
        raise VideoError(
            f"track.tracker={name} needs OpenCV's contrib modules, which this OpenCV "
            f"({cv2.__version__}) lacks: pip install opencv-contrib-python-headless (after "
            "uninstalling opencv-python and opencv-python-headless, which hide it), or use "
            "track.tracker=mil"
        )
    return getattr(cv2, OPENCV_TRACKERS[name]).create()


def inside_fraction(box: Box, width: int, height: int) -> float:
    x, y, w, h = box
    iw = max(0.0, min(x + w, width) - max(x, 0.0))
    ih = max(0.0, min(y + h, height) - max(y, 0.0))
    return iw * ih / max(w * h, 1e-9)


def moving_fraction(mask: np.ndarray, box: Box) -> float:
    x, y, w, h = (round(v) for v in box)
    window = mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)]
    return float(window.mean()) if window.size else 0.0


def track(
    frames: np.ndarray,
    start: int,
    box: Box,
    cfg: TrackConfig | None = None,
    masks: np.ndarray | None = None,
) -> list[tuple[int, Box]]:
    """Follow `box` from frame `start` forward; [(frame index, box), ...] starting with the
    seed, until the object is lost. Frames are (T, H, W, 3) RGB uint8; `masks`, if given,
    are the (T, H, W) motion masks used to notice a drifted track."""
    import cv2

    cfg = cfg or TrackConfig()
    height, width = frames.shape[1:3]
    tracker = make_tracker(cfg.tracker)
    as_bgr = lambda frame: cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)  # noqa: E731
    tracker.init(as_bgr(frames[start]), tuple(round(v) for v in box))
    first_area = box[2] * box[3]
    path = [(start, box)]
    still = 0  # consecutive frames without motion in the box
    for t in range(start + 1, min(len(frames), start + cfg.max_length)):
        ok, found = tracker.update(as_bgr(frames[t]))
        found = tuple(float(v) for v in found)
        if (
            not ok
            or min(found[2], found[3]) < cfg.min_size
            or inside_fraction(found, width, height) < cfg.min_inside
            or found[2] * found[3] > cfg.max_growth * first_area
        ):
            break
        if masks is not None:
            still = still + 1 if moving_fraction(masks[t], found) < cfg.min_motion else 0
            if still >= cfg.motion_patience:
                del path[len(path) - still + 1 :]  # drop the frames spent off the object
                break
        path.append((t, found))
    return path
