"""Every resize kernel against OpenCV's `cv2.resize`, which defines them for the counting paper
("the bicubic, bilinear, lanczos, or the area method as defined in OpenCV").

Tolerances, in 8-bit levels (1 level = 1/255):
- float32 images: OpenCV computes in float too, so only the rounding of coordinates and
  weights differs: max 0.02 levels (measured: at most 0.007).
- uint8 images (what OpenCV users resize): OpenCV rounds its output to integers, and for
  Lanczos also its weights (11-bit fixed point); ours stays unrounded, so it may differ by up
  to one level: max < 1, mean < 0.35 (measured at 32 -> 16 and 228 -> 114: max 0.5 and mean
  0.25 for bilinear, bicubic and area; max 0.998 and mean 0.32 for Lanczos).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from selfsup.data import open_source
from selfsup.data.loader import decode_all
from selfsup.data.resample import resize
from selfsup.demo import sample_path

OPENCV = {
    "nearest": cv2.INTER_NEAREST_EXACT,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
PAPER_KERNELS = ("bilinear", "bicubic", "area", "lanczos")
FLOAT_MAX_LEVELS = 0.02
UINT8_MAX_LEVELS, UINT8_MEAN_LEVELS = 1.0, 0.35


def ours(images: np.ndarray, size: int, kernel: str) -> np.ndarray:
    """(N, H, W, 3) in [0, 1] -> (N, size, size, 3) float64 through `resize`."""
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    return resize(batch, size, kernel).permute(0, 2, 3, 1).double().numpy()


def opencv(images: np.ndarray, size: int, kernel: str) -> np.ndarray:
    """(N, H, W, 3) -> (N, size, size, 3), one cv2.resize per image, in the input's dtype."""
    return np.stack([cv2.resize(im, (size, size), interpolation=OPENCV[kernel]) for im in images])


def level_errors(images_uint8: np.ndarray, size: int, kernel: str) -> tuple[float, float]:
    """(mean, max) |ours - cv2.resize| in 8-bit levels on uint8 images."""
    mine = ours(images_uint8 / 255.0, size, kernel) * 255
    theirs = opencv(images_uint8, size, kernel).astype(np.float64)
    error = np.abs(mine - theirs)
    return float(error.mean()), float(error.max())


# Square shapes of the presets, shrinking by other factors, growing, and non-square inputs
# that shrink on both axes or shrink on one and grow on the other (where OpenCV's area
# switches from averaging to its linear rule).
SHAPES = [
    (32, 32, 16), (228, 228, 114), (32, 32, 11), (64, 40, 7), (256, 300, 228),
    (9, 9, 64), (32, 32, 45), (20, 50, 30), (13, 90, 45), (3, 3, 1),
]  # fmt: skip


@pytest.mark.parametrize("kernel", PAPER_KERNELS)
@pytest.mark.parametrize(("height", "width", "size"), SHAPES)
def test_each_kernel_is_opencvs_definition_on_float_images(kernel, height, width, size):
    images = np.random.default_rng(height * width + size).random((3, height, width, 3))
    images = images.astype(np.float32)  # noise: every frequency, the hardest case
    # OpenCV's float output overshoots [0, 1] (bicubic, Lanczos); ours is clamped as its
    # uint8 output is.
    theirs = np.clip(opencv(images, size, kernel), 0.0, 1.0)
    error = np.abs(ours(images, size, kernel) - theirs) * 255
    assert error.max() < FLOAT_MAX_LEVELS, f"{kernel} {height}x{width}->{size}: {error.max()}"


@functools.cache
def cifar_images() -> np.ndarray:
    """The bundled CIFAR-10 test sample, (N, 32, 32, 3) uint8: real photos at 32 px."""
    decoded = decode_all(open_source(sample_path("test")), 32, workers=0, progress=False)
    return decoded.images[:256].permute(0, 2, 3, 1).numpy()


def coco_crops(folder: Path, count: int = 24) -> np.ndarray:
    """Central 228 px crops of COCO128 photos at their own resolution, (N, 228, 228, 3)."""
    crops = []
    for path in sorted(folder.glob("*.jpg"))[:count]:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        top, left = (image.shape[0] - 228) // 2, (image.shape[1] - 228) // 2
        crops.append(image[top : top + 228, left : left + 228])
    return np.stack(crops)


@pytest.mark.parametrize("kernel", PAPER_KERNELS)
def test_paper_kernels_match_opencv_on_real_images_at_counting_small_size(kernel):
    """counting_small: 32 px crops, tiles and D(x) of 16 px."""
    mean, worst = level_errors(cifar_images(), 16, kernel)
    assert worst < UINT8_MAX_LEVELS and mean < UINT8_MEAN_LEVELS, (mean, worst)


@pytest.mark.realdata
@pytest.mark.parametrize("kernel", PAPER_KERNELS)
def test_paper_kernels_match_opencv_on_real_images_at_the_papers_size(kernel, real_data):
    """counting_alexnet_imagenet, the paper's sizes: 228 px crops, 114 px tiles and D(x)."""
    crops = coco_crops(real_data / "detection" / "coco128" / "images" / "train2017")
    mean, worst = level_errors(crops, 114, kernel)
    assert worst < UINT8_MAX_LEVELS and mean < UINT8_MEAN_LEVELS, (mean, worst)


def test_bilinear_is_area_at_exactly_2x_in_opencv_and_here():
    """So the paper's four kernels are three distinct filters at the counting task's 2x."""
    images = cifar_images()[:32]
    linear = opencv(images, 16, "bilinear")
    assert np.array_equal(linear, opencv(images, 16, "area"))
    floats = images / 255.0
    assert np.allclose(ours(floats, 16, "bilinear"), ours(floats, 16, "area"), atol=1e-6)
    assert not np.allclose(ours(floats, 16, "bicubic"), ours(floats, 16, "area"), atol=1e-3)


def test_lanczos_does_not_low_pass_when_shrinking_as_in_opencv():
    """Lanczos4 reads the 8 pixels around each sample whatever the scale (no antialiasing):
    a bright column every 4 pixels (mean 0.25) shrunk 4x aliases to a flat 0.61 in OpenCV
    and here, where area averages it to 0.25."""
    stripes = np.zeros((1, 32, 32, 3), np.float32)
    stripes[:, :, 1::4] = 1.0
    assert np.allclose(ours(stripes, 8, "area"), 0.25, atol=1e-6)
    lanczos = ours(stripes, 8, "lanczos")
    assert np.abs(lanczos - 0.25).min() > 0.3
    assert np.allclose(lanczos, np.clip(opencv(stripes, 8, "lanczos"), 0, 1), atol=1e-4)


def test_nearest_is_opencvs_nearest_exact_at_2x():
    """Not one of the paper's kernels; torch's `nearest-exact` is OpenCV's INTER_NEAREST_EXACT
    (apart from samples that fall exactly on a pixel border, rounded differently)."""
    images = cifar_images()[:32]
    picked = np.round(ours(images / 255.0, 16, "nearest") * 255)
    assert np.array_equal(picked, opencv(images, 16, "nearest"))


@pytest.mark.parametrize("kernel", PAPER_KERNELS)
def test_kernels_give_the_same_pixels_on_every_device(kernel, device):
    images = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    expected = resize(images, 20, kernel)
    on_device = resize(images.to(device), 20, kernel).cpu()
    assert torch.allclose(on_device, expected, atol=1e-5)
