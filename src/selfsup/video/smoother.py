"""The fast global smoother (Min et al. 2014, "Fast global image smoothing based on weighted
least squares") in NumPy, for OpenCV builds without the contrib modules.

Weighted least squares smoothing asks for the image u closest to the input f whose
neighbours differ little except across edges of a guide image g:

    minimise  sum_p (u_p - f_p)^2 + lambda * sum_{p~q} w_pq (u_p - u_q)^2,
    w_pq = exp(-|g_p - g_q| / sigma)

The fast global smoother solves it approximately by alternating 1-D problems along rows and
columns, each a tridiagonal system solved exactly in one forward and one backward sweep
(Thomas' algorithm), with lambda divided by 4 after every row+column round so the 1-D
passes leave no streaks. This is the same scheme, with the same weights and defaults, as
OpenCV's `cv2.ximgproc.fastGlobalSmootherFilter`; results agree to float32 rounding.

The sweeps are sequential along a line but independent across lines, so each step of a
sweep is one vector operation over all rows (or columns) at once.
"""

from __future__ import annotations

import numpy as np


def neighbour_weights(guide: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """-w between each pixel and its right neighbour (H, W) and the one below (H, W), from an
    (H, W) or (H, W, C) uint8 guide; 0 where there is no neighbour (last column, last row)."""
    g = guide.astype(np.float32)
    if g.ndim == 2:
        g = g[..., None]
    right = np.zeros(g.shape[:2], np.float32)
    below = np.zeros(g.shape[:2], np.float32)
    scale = np.float32(sigma)
    right[:, :-1] = -np.exp(-np.sqrt(((g[:, 1:] - g[:, :-1]) ** 2).sum(-1)) / scale)
    below[:-1] = -np.exp(-np.sqrt(((g[1:] - g[:-1]) ** 2).sum(-1)) / scale)
    return right, below


def solve_lines(values: np.ndarray, coupling: np.ndarray) -> None:
    """Solve, in place and independently for every column n of the (L, N) array `values`,
    the tridiagonal system (1 - a[j-1] - a[j]) u[j] + a[j-1] u[j-1] + a[j] u[j+1] = f[j],
    with a = `coupling` (L, N), a[L-1] = 0 (the line's last element has no successor)."""
    length = values.shape[0]
    previous = np.zeros_like(coupling)  # a[j-1], 0 for the first element
    previous[1:] = coupling[:-1]
    diagonal = 1 - previous - coupling
    ratio = np.empty_like(values)  # the forward sweep's c'[j] of Thomas' algorithm
    ratio[0] = coupling[0] / diagonal[0]
    values[0] /= diagonal[0]
    denom = np.empty_like(values[0])
    scratch = np.empty_like(values[0])
    for j in range(1, length):
        np.multiply(ratio[j - 1], previous[j], out=denom)
        np.subtract(diagonal[j], denom, out=denom)
        np.divide(coupling[j], denom, out=ratio[j])
        np.multiply(values[j - 1], previous[j], out=scratch)
        np.subtract(values[j], scratch, out=values[j])
        np.divide(values[j], denom, out=values[j])
    for j in range(length - 2, -1, -1):
        np.multiply(ratio[j], values[j + 1], out=scratch)
        np.subtract(values[j], scratch, out=values[j])


def fast_global_smoother(
    guide: np.ndarray,
    image: np.ndarray,
    lam: float,
    sigma: float,
    attenuation: float = 0.25,
    iterations: int = 3,
) -> np.ndarray:
    """`image` (H, W) smoothed within the regions of `guide` (H, W[, C]) uint8: float32."""
    if guide.shape[:2] != image.shape[:2]:
        raise ValueError(f"guide {guide.shape[:2]} and image {image.shape[:2]} differ in size")
    right, below = neighbour_weights(guide, sigma)
    rows_first = np.ascontiguousarray(image.astype(np.float32).T)  # (W, H): sweep along x
    right_t = np.ascontiguousarray(right.T)
    for _ in range(iterations):
        solve_lines(rows_first, np.float32(lam) * right_t)
        columns_first = np.ascontiguousarray(rows_first.T)  # (H, W): sweep along y
        solve_lines(columns_first, np.float32(lam) * below)
        rows_first = np.ascontiguousarray(columns_first.T)
        lam *= attenuation
    return np.ascontiguousarray(rows_first.T)
