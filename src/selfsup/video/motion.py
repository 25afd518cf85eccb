"""Unsupervised motion masks from a single video.

Two methods (`method`):

- `object` (default, objects.py): masks of whole moving objects. Motion is measured against
  the camera motion of the frame border, thresholded per frame, completed by appearance and
  carried along the flow through frames where motion fails.
- `residual`: masks of the pixels whose flow the camera's motion does not explain, the
  method below. It finds the parts that move against the camera (a walking animal's legs)
  rather than whole objects; kept for comparison and for what was trained on it.

`method=residual`, per frame t (the last frame uses the pair (t-1, t)):

1. **Dense optical flow** from frame t to t+1 on grayscale frames (OpenCV's DIS with its
   medium preset, fast and accurate enough; Farnebäck as an option), at `flow_size` pixels
   on the shorter side.
2. **Camera-motion compensation**: the dominant motion is a homography fitted with RANSAC to
   flow correspondences on a regular grid; the residual flow |f(p) - (H p - p)| is the motion
   the camera does not explain. Where the fit fails (too few inliers) the median flow is the
   camera motion.
3. **Robust threshold**: a pixel moves if its residual exceeds
   max(`min_residual`, `residual_sigmas` x the robust spread (1.4826 x MAD) of the residual
   over the frame); the adaptive term keeps flow noise on textureless or blurred frames out.
4. **Temporal smoothing**: the per-frame residual scores are averaged over a window of
   `temporal_window` frames before thresholding, so a pixel must move consistently.
5. **Cleanup**: morphological opening then closing (`morph_kernel` px), holes filled,
   connected components smaller than `min_area` of the frame dropped.

Masks come back at the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfsup.config import ConfigError, param


@dataclass
class MotionMaskConfig:
    method: str = param(
        "object",
        "object: whole moving objects (motion, then appearance and propagation); residual: "
        "only the pixels the camera's motion does not explain (the earlier method).",
        choices=("object", "residual"),
    )
    flow: str = param(
        "auto",
        "Dense optical flow: dis-fine (DIS at full flow_size resolution), dis (DIS's medium "
        "preset: half resolution, ~2.5x faster per flow, blurrier at object edges), farneback; "
        "auto: dis-fine for method=object, dis for method=residual (the flow its masks were "
        "made with).",
        choices=("auto", "dis-fine", "dis", "farneback"),
    )
    flow_size: int = param(
        240, "Shorter side the frames are resized to for flow (masks return at full size).", low=16
    )
    grid_step: int = param(
        8, "Spacing (px at flow_size) of the correspondences the homography is fitted to.", low=1
    )
    ransac_threshold: float = param(
        1.0,
        "RANSAC inlier threshold of the camera homography, in px at flow_size.",
        low=0.0,
        low_exclusive=True,
    )
    min_residual: float = param(
        3.0,
        "A pixel moves only if its residual flow exceeds this many px at flow_size "
        "(object: at most this; see floor_fraction).",
        low=0.0,
    )
    residual_sigmas: float = param(
        6.0,
        "residual: ... and exceeds this many robust standard deviations of the frame's "
        "residual (object uses Otsu's threshold instead).",
        low=0.0,
    )
    temporal_window: int = param(
        3,
        "Frames whose residual scores are averaged (odd; 1 disables smoothing); object: "
        "carried along the flow.",
        low=1,
    )
    morph_kernel: int = param(
        5, "Side (px at flow_size) of the opening/closing element; 0 disables.", low=0
    )
    min_area: float = param(
        0.002, "Connected components below this fraction of the frame are dropped.", low=0.0
    )
    camera_border: float = param(
        0.12,
        "object: the camera's motion is fitted to the flow in this border band (fraction of "
        "the shorter side), where objects rarely are.",
        low=0.0,
        low_exclusive=True,
    )
    background_layers: int = param(
        2,
        "object: the border band's motion is one homography (1), or two when its flow splits "
        "into two layers of depth, near and far (2): a pixel's residual is against the "
        "nearer layer.",
        choices=(1, 2),
    )
    floor_fraction: float = param(
        0.5,
        "object: in a slow clip the floor drops below min_residual to this fraction of the "
        "clip's fastest motion (99th percentile residual); over a still background, to 4x "
        "its noise; never below 0.5 px. 0.5: what leave-one-out over the ten shared DAVIS "
        "clips picks for nine of them (docs/video.md).",
        low=0.0,
    )
    appearance_band: int = param(
        15,
        "object: colour decides object or background within this many px (at flow_size) of "
        "the motion mask; 0 keeps to the motion mask.",
        low=0,
    )
    smoothness: float = param(
        50.0,
        "object: strength of the edge-aware smoothing that snaps masks to the object's "
        "outline (0 disables).",
        low=0.0,
    )
    memory: float = param(
        0.3,
        "object: weight of the previous frame's mask, carried along the flow, against the "
        "frame's own evidence (0: frames alone; must be < 1). Frames without usable motion "
        "take the carried mask whatever it is; a high weight (0.9) also lets a mask carried "
        "by flow that fails (a fast dog behind trees, a twirling dancer) outweigh what the "
        "frame shows.",
        low=0.0,
    )

    def check(self, prefix: str) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}" if prefix else name

        if self.camera_border >= 0.5:
            raise ConfigError(
                f"{key('camera_border')}: must be < 0.5 (a band on each side), "
                f"got {self.camera_border}"
            )
        if self.memory >= 1:
            raise ConfigError(
                f"{key('memory')}: must be < 1 (1 would ignore every frame's evidence), "
                f"got {self.memory}"
            )
        if self.floor_fraction > 1:
            raise ConfigError(
                f"{key('floor_fraction')}: must be <= 1 (a fraction of the fastest motion), "
                f"got {self.floor_fraction}"
            )
        if self.temporal_window % 2 == 0:
            raise ConfigError(
                f"{key('temporal_window')}: must be odd (centred on the frame), "
                f"got {self.temporal_window}"
            )


def to_gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def flow_method(cfg: MotionMaskConfig) -> str:
    """The flow `cfg.flow` names, `auto` resolved for the mask method."""
    if cfg.flow != "auto":
        return cfg.flow
    return "dis-fine" if cfg.method == "object" else "dis"


class FlowEstimator:
    def __init__(self, method: str):
        import cv2

        self.method = method
        if method in ("dis", "dis-fine"):
            self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if method == "dis-fine":
            # The medium preset stops at half resolution, so flow is blurred over ~2x its
            # patches at object edges and slips on large or blurred motion. Estimated at full
            # resolution instead, the variational refinement only smooths the flow across
            # motion boundaries (and costs a quarter of the time): on the shared DAVIS clips
            # this gave J 0.657 -> 0.723 (0.451 -> 0.553 at twice the motion) at ~1.4x the
            # object masks' time.
            self.dis.setFinestScale(0)
            self.dis.setVariationalRefinementIterations(0)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow (H, W, 2) from grayscale frame a to b."""
        import cv2

        if self.method != "farneback":
            return self.dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 21, 3, 5, 1.1, 0)


def camera_flow(
    flow: np.ndarray, grid_step: int, ransac_threshold: float, points: np.ndarray | None = None
) -> np.ndarray:
    """The flow a homography fitted (RANSAC) to the dense flow would give: (H, W, 2). Only
    grid points where `points` (bool (H, W)) is true are used, if given."""
    import cv2

    h, w = flow.shape[:2]
    ys, xs = np.mgrid[grid_step // 2 : h : grid_step, grid_step // 2 : w : grid_step]
    if points is not None:
        keep = points[ys, xs]
        ys, xs = ys[keep], xs[keep]
    src = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()]
    homography, inliers = (None, None)
    if len(src) >= 8:
        homography, inliers = cv2.findHomography(src, dst, cv2.RANSAC, ransac_threshold)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    if homography is None or inliers is None or inliers.sum() < 0.2 * len(src):
        # No dominant plane (or a degenerate fit): the median flow is the camera motion.
        return np.broadcast_to(np.median(flow.reshape(-1, 2), 0), flow.shape).copy()
    points = np.stack([gx, gy], -1).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(points, homography).reshape(h, w, 2)
    return moved - np.stack([gx, gy], -1)


def squared_length(vectors: np.ndarray) -> np.ndarray:
    """(H, W, 2) -> (H, W): x^2 + y^2 (~4x faster than summing over the last axis)."""
    squares = vectors * vectors
    return squares[..., 0] + squares[..., 1]


def residual_flow(
    flow: np.ndarray, cfg: MotionMaskConfig, points: np.ndarray | None = None
) -> np.ndarray:
    """|flow - camera flow| (H, W), the camera's motion fitted to the flow at `points`
    (default: everywhere)."""
    flow = flow.astype(np.float32, copy=False)
    camera = camera_flow(flow, cfg.grid_step, cfg.ransac_threshold, points)
    return np.sqrt(squared_length(flow - camera))


def residual_score(flow: np.ndarray, cfg: MotionMaskConfig) -> np.ndarray:
    """Residual flow magnitude over the frame's threshold: > 1 means moving."""
    residual = residual_flow(flow, cfg)
    median = np.median(residual)
    spread = 1.4826 * np.median(np.abs(residual - median))
    threshold = max(cfg.min_residual, median + cfg.residual_sigmas * spread, 1e-6)
    return (residual / threshold).astype(np.float32)


def residual_scores(frames: np.ndarray, cfg: MotionMaskConfig) -> np.ndarray:
    """Per frame t, the smaller of the residual scores of the flows t -> t+1 and t -> t-1
    (T, h, w), at flow_size. Both flows live on frame t's pixels; taking the minimum keeps
    what moves against both neighbours and drops the smear flow leaves on one side of an
    object (background it is about to cover or has just uncovered)."""
    from selfsup.video.reader import resize_frame

    gray = [to_gray(resize_frame(f, cfg.flow_size)) for f in frames]
    flow_of = FlowEstimator(flow_method(cfg))
    forward = [residual_score(flow_of(gray[t], gray[t + 1]), cfg) for t in range(len(gray) - 1)]
    backward = [residual_score(flow_of(gray[t], gray[t - 1]), cfg) for t in range(1, len(gray))]
    if not forward:  # a single frame: nothing can be seen to move
        return np.zeros((1, *gray[0].shape), np.float32)
    scores = [forward[0]]
    scores += [np.minimum(f, b) for f, b in zip(forward[1:], backward[:-1])]
    scores.append(backward[-1])
    return np.stack(scores)


def smooth_in_time(scores: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return scores
    half = window // 2
    cumulative = np.concatenate([np.zeros_like(scores[:1]), np.cumsum(scores, 0)])
    t = np.arange(len(scores))
    low, high = np.clip(t - half, 0, len(scores)), np.clip(t + half + 1, 0, len(scores))
    return (cumulative[high] - cumulative[low]) / (high - low)[:, None, None]


def clean_mask(mask: np.ndarray, cfg: MotionMaskConfig) -> np.ndarray:
    import cv2

    mask = mask.astype(np.uint8)
    if cfg.morph_kernel > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.morph_kernel,) * 2)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = fill_holes(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= cfg.min_area * mask.size
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels not connected to the border become foreground."""
    import cv2

    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    return (padded | holes.astype(np.uint8))[1:-1, 1:-1]
