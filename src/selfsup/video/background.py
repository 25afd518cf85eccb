"""The background's motion as one or two layers of depth, each a homography of the border band.

A homography is the image motion of one plane. When the camera only turns, or the scene is
far away, one explains the whole background. When the camera travels, near things (rocks at
the bottom of the frame, bushes) slide past faster than far ones (a hillside): the parallax
of depth. One homography fitted to the border band then bends between the layers (a
tilted plane through both) or follows one, and the rest stays "moving", above an object
that the camera follows and that hardly moves in the frame.

So the band's flow vectors are split in two by k-means; when both groups hold at least
LAYER_SHARE of the band and their mean flows differ by over LAYER_GAP px, each gets its own
homography and a pixel's residual is its distance to the nearer layer's flow. An object
reaching into the band is the risk (its flow there is a layer of its own): it must fill
LAYER_SHARE of the band to be taken for one.
"""

from __future__ import annotations

import numpy as np

LAYER_SHARE = 0.25  # of the band's grid points the smaller layer must hold
LAYER_GAP = 1.0  # px: layers whose mean flows differ by less are one


def band_grid(shape: tuple[int, int], grid_step: int, points: np.ndarray) -> np.ndarray:
    """(N, 2) x, y of the grid points inside `points` (bool (H, W))."""
    h, w = shape
    ys, xs = np.mgrid[grid_step // 2 : h : grid_step, grid_step // 2 : w : grid_step]
    keep = points[ys, xs]
    return np.stack([xs[keep], ys[keep]], 1)


def fit_layers(
    flow: np.ndarray, grid_step: int, ransac_threshold: float, points: np.ndarray
) -> list[np.ndarray]:
    """One or two homographies (3 x 3) for the band's flow; none when no plane dominates."""
    import cv2

    grid = band_grid(flow.shape[:2], grid_step, points)
    src = grid.astype(np.float32)
    vectors = flow[grid[:, 1], grid[:, 0]].astype(np.float32)
    groups = [np.ones(len(src), bool)]
    if len(src) >= 16:
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.05)
        # k-means++ draws from OpenCV's per-thread RNG, whose state depends on every earlier
        # draw in the process: seed it, so a video's masks do not depend on which videos
        # the same process (or Ray worker) handled before it.
        cv2.setRNGSeed(0)
        _, labels, centres = cv2.kmeans(vectors, 2, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
        split = [labels.ravel() == k for k in (0, 1)]
        if (
            min(s.mean() for s in split) >= LAYER_SHARE
            and np.linalg.norm(centres[0] - centres[1]) > LAYER_GAP
        ):
            groups = split
    fitted = []
    for group in groups:
        if group.sum() < 8:
            continue
        homography, inliers = cv2.findHomography(
            src[group], src[group] + vectors[group], cv2.RANSAC, ransac_threshold
        )
        if homography is not None and inliers is not None and inliers.sum() >= 0.2 * group.sum():
            fitted.append(homography)
    return fitted


def layered_residual(
    flow: np.ndarray, grid_step: int, ransac_threshold: float, points: np.ndarray
) -> tuple[np.ndarray, int]:
    """|flow - the nearer background layer's flow| (H, W) px, and the number of layers; the
    median flow stands for the background when no plane dominates the band."""
    import cv2

    flow = flow.astype(np.float32, copy=False)
    homographies = fit_layers(flow, grid_step, ransac_threshold, points)
    if not homographies:
        return np.linalg.norm(flow - np.median(flow.reshape(-1, 2), 0), axis=-1), 0
    h, w = flow.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([gx, gy], -1)
    target = grid + flow
    nearest = None
    for homography in homographies:
        moved = cv2.perspectiveTransform(grid.reshape(-1, 1, 2), homography).reshape(h, w, 2)
        gap = moved - target
        squared = gap[..., 0] ** 2 + gap[..., 1] ** 2
        nearest = squared if nearest is None else np.minimum(nearest, squared)
    return np.sqrt(nearest), len(homographies)
