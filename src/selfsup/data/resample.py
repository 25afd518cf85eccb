"""Resizing a float batch (B, C, H, W) as OpenCV's `cv2.resize` defines each kernel.

The counting paper draws its downsampling kernel from "the bicubic, bilinear, lanczos, or the
area method as defined in OpenCV", so each kernel here is OpenCV's definition, computed as
batched tensor ops on the batch's device (no per-image cv2 call):

- `bilinear`, `bicubic`: `F.interpolate` without antialiasing, which is OpenCV's INTER_LINEAR
  and INTER_CUBIC (the same pixel-centre mapping, a = -0.75, edge pixels repeated). OpenCV
  does not low-pass these when it shrinks either.
- `lanczos`: OpenCV's INTER_LANCZOS4, sinc(x) sinc(x/4) on 8 x 8 taps, also without
  antialiasing; torch has none, so each axis is a precomputed (out, in) weight matrix.
- `area`: OpenCV's INTER_AREA: when both sides shrink, each output pixel is the mean of the
  input area it covers (fractional pixels weighted by their share); otherwise OpenCV's
  area-mode linear interpolation. Also a weight matrix per axis.
- `nearest`: `nearest-exact`, OpenCV's INTER_NEAREST_EXACT (but for samples that fall exactly
  on a pixel border, rounded differently). Not one of the paper's four.

At exactly 2x, OpenCV's bilinear gives the same pixels as its area method, and ours does too.

How close: `tests/test_resample.py` compares each kernel with `cv2.resize`, on float32 noise
at ten shapes and on real photos at the counting presets' sizes (32 -> 16 and 228 -> 114).
On float32 images the outputs agree within 0.02 of an 8-bit level (rounding of coordinates
and weights); on uint8 images OpenCV rounds its output and, for Lanczos, its fixed-point
weights, so ours (unrounded) differs by less than one level, under 0.35 on average.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_KERNELS = ("nearest", "bilinear", "bicubic", "area", "lanczos")

LANCZOS_TAPS = 8  # OpenCV's INTER_LANCZOS4: 4 lobes, taps at floor(x) - 3 .. floor(x) + 4


def lanczos4_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights of OpenCV's INTER_LANCZOS4 along one axis.

    Output pixel d samples the input at x = (d + 0.5) n_in / n_out - 0.5 (pixel centres
    aligned) with the normalised kernel sinc(t) sinc(t / 4) at the 8 pixels around x; pixels
    beyond the border repeat the edge pixel, as in OpenCV's resize.
    """
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(x)
    offsets = np.arange(-3, LANCZOS_TAPS - 3)  # (8,)
    t = (x - base)[:, None] - offsets  # (n_out, 8): distance of each tap from x
    # np.sinc(t) = sin(pi t) / (pi t), with sinc(0) = 1 where x falls on a pixel.
    weights = np.sinc(t) * np.sinc(t / 4)
    weights /= weights.sum(axis=1, keepdims=True)  # OpenCV normalises the 8 taps too
    taps = np.clip(base[:, None].astype(np.int64) + offsets, 0, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out)[:, None], taps), weights)
    return matrix


def area_weights(n_in: int, n_out: int, shrink_both: bool) -> np.ndarray:
    """(n_out, n_in) float64 weights of OpenCV's INTER_AREA along one axis.

    `shrink_both` (neither side of the image grows): output pixel d averages the input span
    [d s, (d + 1) s), s = n_in / n_out, each pixel weighted by the length it shares with it.
    Otherwise OpenCV interpolates linearly between pixels floor(d s) and floor(d s) + 1 with
    the weight of the second fx = frac((d + 1) - (floor(d s) + 1) / s) (0 when negative),
    the edge pixel alone past the border; on a growing axis this equals the span average.
    """
    scale = n_in / n_out
    out = np.arange(n_out, dtype=np.float64)[:, None]  # (n_out, 1)
    if shrink_both:
        pixels = np.arange(n_in, dtype=np.float64)[None, :]  # (1, n_in)
        start, stop = out * scale, (out + 1) * scale
        shared = np.minimum(stop, pixels + 1) - np.maximum(start, pixels)
        return np.clip(shared, 0.0, None) / scale
    left = np.floor(out[:, 0] * scale).astype(np.int64)  # (n_out,)
    fx = (out[:, 0] + 1) - (left + 1) / scale
    fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
    past_edge = left >= n_in - 1
    fx = np.where(past_edge, 0.0, fx)
    left = np.minimum(left, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, left), 1.0 - fx)
    np.add.at(matrix, (rows, np.minimum(left + 1, n_in - 1)), fx)
    return matrix


@functools.lru_cache(maxsize=64)
def axis_weights(kernel: str, n_in: int, n_out: int, shrink_both: bool) -> np.ndarray:
    """The (n_out, n_in) float32 weight matrix of `kernel` along one axis, built once per
    shape with NumPy. It stays an array: made a tensor afresh in each call, a step costs the
    same tensor operations whether or not its matrices were cached."""
    if kernel == "lanczos":
        matrix = lanczos4_weights(n_in, n_out)
    else:
        matrix = area_weights(n_in, n_out, shrink_both)
    return matrix.astype(np.float32)  # shared by every call: read, never written


def resize_separable(images: torch.Tensor, size: int, kernel: str) -> torch.Tensor:
    """`lanczos` or `area` (see `axis_weights`): rows, then columns, each one matmul for the
    whole batch. The matmuls run in float32 (views are built outside autocast)."""
    height, width = images.shape[-2:]
    shrink_both = height >= size and width >= size

    def weights(n_in: int) -> torch.Tensor:
        matrix = torch.from_numpy(axis_weights(kernel, n_in, size, shrink_both))
        # Non-blocking: a blocking copy would wait for the GPU's queued work every step.
        return matrix.to(images.device, images.dtype, non_blocking=True)

    rows, cols = weights(height), weights(width)  # (size, H), (size, W)
    return torch.matmul(torch.matmul(rows, images), cols.t())  # (B, C, size, size)


def resize(images: torch.Tensor, size: int, kernel: str) -> torch.Tensor:
    """Resize a float batch in [0, 1] to `size` x `size` with one of RESIZE_KERNELS, as
    `cv2.resize` does with the matching INTER_* flag (see the module's docstring)."""
    if kernel not in RESIZE_KERNELS:
        raise ValueError(f"unknown resize kernel {kernel!r}; choose from {RESIZE_KERNELS}")
    if kernel == "nearest":
        return F.interpolate(images, size=(size, size), mode="nearest-exact")
    if kernel == "area":
        return resize_separable(images, size, "area")
    if kernel == "lanczos":
        # Negative lobes overshoot near sharp edges; OpenCV saturates uint8 output likewise.
        return resize_separable(images, size, "lanczos").clamp_(0.0, 1.0)
    out = F.interpolate(images, size=(size, size), mode=kernel, align_corners=False)
    return out.clamp_(0.0, 1.0) if kernel == "bicubic" else out


def resize_each(
    images: torch.Tensor, size: int, kernels: tuple[str, ...], choice: torch.Tensor
) -> torch.Tensor:
    """Resize image i with `kernels[choice[i]]` (choice (B,) on the CPU; one call per kernel,
    so the number of operations does not grow with the batch)."""
    out = images.new_empty(images.shape[0], images.shape[1], size, size)
    for k, kernel in enumerate(kernels):
        rows = (choice == k).nonzero().flatten().to(images.device, non_blocking=True)
        if rows.numel():
            out[rows] = resize(images[rows], size, kernel)
    return out


def resize_random_kernel(
    images: torch.Tensor, size: int, kernels: tuple[str, ...], generator: torch.Generator
) -> torch.Tensor:
    """Resize each image with a kernel drawn uniformly from `kernels`."""
    choice = torch.randint(0, len(kernels), (images.shape[0],), generator=generator)
    return resize_each(images, size, kernels, choice)
