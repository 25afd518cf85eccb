"""Appearance completes what motion only sketches.

Flow is smooth across object edges, so a motion mask spills onto the background beside the
object (shadow, road, water) and misses object parts that hardly move. Colour separates
them: within a band around the motion mask, a pixel belongs to the object when its colour
is more typical of the object's pixels than of the background's nearby, weighed with how
strongly it moves (the prior). The colour models are joint RGB histograms learnt from
the band itself by EM (grabCut's idea with histograms instead of GMMs, and no k-means:
about 20x cheaper), so they are local to the object and its surroundings in this frame.
An edge-aware smoother (the fast global smoother, guided by the frame; OpenCV's when its
contrib modules are installed, else selfsup.video.smoother's) then plays the part of
grabCut's graph cut: the probability spreads along regions of similar colour and stops at
edges, so the mask snaps to the object's outline.
"""

from __future__ import annotations

import numpy as np

from selfsup.video.smoother import fast_global_smoother

BINS = 16  # per channel: 4096 colours, enough to tell object from background, few enough
#            that a band of a few thousand pixels fills the histograms
ITERATIONS = 2  # EM rounds: the first removes most of the spill, more change little
FLOOR = 0.02  # the prior never says "certainly" (0 or 1): colour can always overrule it
SMOOTHER_SIGMA = 8.0  # colour difference (of 255) the smoother treats as an edge


def colour_index(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) index of the pixel's colour bin."""
    q = frame.astype(np.int32) * BINS >> 8
    return (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]


def colour_posterior(frame: np.ndarray, prior: np.ndarray, band: np.ndarray) -> np.ndarray:
    """P(object | colour, motion) inside `band` (bool), 0 outside. `prior` (H, W) is the
    probability that a pixel is on the object from motion alone."""
    prior = np.clip(prior[band].astype(np.float64), FLOOR, 1 - FLOOR)
    colours = colour_index(frame)[band]
    size = BINS**3
    posterior = prior
    for _ in range(ITERATIONS):
        # Soft counts: each pixel counts for the object with its current probability.
        fg = np.bincount(colours, weights=posterior, minlength=size) + 1e-3
        bg = np.bincount(colours, weights=1 - posterior, minlength=size) + 1e-3
        like_fg, like_bg = (fg / fg.sum())[colours], (bg / bg.sum())[colours]
        posterior = prior * like_fg / (prior * like_fg + (1 - prior) * like_bg)
    out = np.zeros(band.shape, np.float32)
    out[band] = posterior
    return out


def edge_aware_smooth(frame: np.ndarray, probability: np.ndarray, smoothness: float) -> np.ndarray:
    """Spread `probability` within regions of similar colour (0 disables)."""
    if smoothness <= 0:
        return probability
    import cv2

    if hasattr(cv2, "ximgproc"):  # OpenCV's contrib build: the same filter, ~15x faster
        return cv2.ximgproc.fastGlobalSmootherFilter(frame, probability, smoothness, SMOOTHER_SIGMA)
    return fast_global_smoother(frame, probability, smoothness, SMOOTHER_SIGMA)


def complete_with_appearance(
    frame: np.ndarray, prior: np.ndarray, seed: np.ndarray, band_px: int, smoothness: float
) -> np.ndarray:
    """Object probability (H, W) float32 from a frame, the motion prior and the motion
    mask `seed`: colour decides within `band_px` of the seed."""
    import cv2

    if band_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1,) * 2)
        band = cv2.dilate(seed.astype(np.uint8), kernel) > 0
    else:
        band = seed.astype(bool)
    return edge_aware_smooth(frame, colour_posterior(frame, prior, band), smoothness)
