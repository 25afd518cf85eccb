"""Property-based tests of the batched view builders (`selfsup.data.views`) and the counting
task's `make_views`: for any batch and image size or aspect in range, the views have the
documented shapes, dtypes and value ranges, and no builder reads outside the image.

Reading outside would not always raise: `crop_at` gathers with advanced indexing, where a
negative index wraps around silently, and `roi_align` pads with zeros. So the tests use images
whose pixels encode their own coordinates (to check where a crop came from) and constant images
(which stay constant only when every sample falls inside).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfsup.backbones import build_backbone
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.counting import Counting, CountingConfig
from tests.helpers import one_torch_thread  # noqa: F401 (autouse)

# Images enter the view builders at data.image_size (>= 8) but the builders take any
# (B, C, H, W); sides up to 12:1 cover odd crops and panoramas.
SIDE = st.integers(8, 96)
BATCH = st.integers(1, 4)
SEED = st.integers(0, 2**31 - 1)
FEW = settings(max_examples=25, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinate_images(batch: int, height: int, width: int) -> torch.Tensor:
    """(B, 3, H, W) float: channel 0 holds the row, 1 the column, 2 the image index."""
    rows = torch.arange(height, dtype=torch.float32).view(height, 1).expand(height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, width).expand(height, width)
    return torch.stack([torch.stack([rows, cols, torch.full_like(rows, b)]) for b in range(batch)])


def assert_exact_window(crop: torch.Tensor, b: int, size: int, height: int, width: int) -> None:
    """`crop` (3, size, size) of coordinate image `b` is one contiguous in-bounds window."""
    top, left = int(crop[0, 0, 0]), int(crop[1, 0, 0])
    assert 0 <= top <= height - size and 0 <= left <= width - size
    offsets = torch.arange(size, dtype=torch.float32)
    assert torch.equal(crop[0], (top + offsets).view(size, 1).expand(size, size))
    assert torch.equal(crop[1], (left + offsets).view(1, size).expand(size, size))
    assert (crop[2] == b).all()


def random_uint8(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=gen(seed))


@FEW
@given(batch=BATCH, height=SIDE, width=SIDE, fraction=st.floats(0.01, 1.0), seed=SEED)
def test_random_crop_is_an_in_bounds_window_of_its_own_image(batch, height, width, fraction, seed):
    size = max(1, round(fraction * min(height, width)))
    crops = V.random_crop(coordinate_images(batch, height, width), size, gen(seed))
    assert crops.shape == (batch, 3, size, size)
    for b in range(batch):
        assert_exact_window(crops[b], b, size, height, width)
    as_uint8 = V.random_crop(random_uint8(batch, height, width, seed), size, gen(seed))
    assert as_uint8.dtype == torch.uint8
    with pytest.raises(ValueError, match="larger than the images"):
        V.random_crop(coordinate_images(batch, height, width), min(height, width) + 1, gen(seed))


@FEW
@given(
    batch=BATCH,
    side=st.integers(8, 96),
    patch=st.integers(1, 24),
    gap=st.integers(0, 8),
    jitter=st.integers(0, 4),
    seed=SEED,
)
def test_grid_patches_stay_inside_the_image(batch, side, patch, gap, jitter, seed):
    if V.grid_extent(patch, gap, jitter) > side:
        with pytest.raises(ValueError, match="does not fit"):
            V.grid_positions(batch, side, patch, gap, jitter, gen(seed))
        return
    top, left = V.grid_positions(batch, side, patch, gap, jitter, gen(seed))
    assert top.shape == left.shape == (batch, 9)
    crops = V.crop_at(coordinate_images(batch, side, side), top, left, patch)
    assert crops.shape == (batch, 9, 3, patch, patch)
    for b in range(batch):
        for k in range(9):
            assert_exact_window(crops[b, k], b, patch, side, side)


@FEW
@given(
    batch=BATCH,
    height=SIDE,
    width=SIDE,
    size=st.integers(1, 64),
    low=st.floats(0.01, 1.0),
    seed=SEED,
)
def test_random_resized_crop_samples_only_inside_the_image(batch, height, width, size, low, seed):
    images = random_uint8(batch, height, width, seed)
    views = V.random_resized_crop(images, size, gen(seed), scale=(low, 1.0))
    assert views.shape == (batch, 3, size, size) and views.dtype == torch.float32
    assert torch.isfinite(views).all() and views.min() >= 0 and views.max() <= 1
    # roi_align reads zeros outside the image: a constant image stays constant only if not.
    constant = torch.full((batch, 3, height, width), 200, dtype=torch.uint8)
    flat = V.random_resized_crop(constant, size, gen(seed), scale=(low, 1.0))
    assert torch.allclose(flat, torch.full_like(flat, 200 / 255), atol=1e-5)


@FEW
@given(
    batch=BATCH,
    height=SIDE,
    width=SIDE,
    size=st.integers(1, 64),
    kernel=st.sampled_from(V.RESIZE_KERNELS),
    seed=SEED,
)
def test_every_resize_kernel_keeps_shape_range_and_constants(
    batch, height, width, size, kernel, seed
):
    images = V.to_float(random_uint8(batch, height, width, seed))
    out = V.resize(images, size, kernel)
    assert out.shape == (batch, 3, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    flat = V.resize(torch.full((batch, 3, height, width), 0.3), size, kernel)
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-5)
    mixed = V.resize_random_kernel(images, size, V.RESIZE_KERNELS, gen(seed))
    assert mixed.shape == (batch, 3, size, size) and mixed.min() >= 0 and mixed.max() <= 1


@FEW
@given(batch=BATCH, half_height=st.integers(1, 48), half_width=st.integers(1, 48), seed=SEED)
def test_tiles_2x2_reassemble_any_even_image(batch, half_height, half_width, seed):
    images = random_uint8(batch, 2 * half_height, 2 * half_width, seed)
    tiles = V.tiles_2x2(images)
    assert tiles.shape == (batch, 4, 3, half_height, half_width) and tiles.dtype == torch.uint8
    top = torch.cat([tiles[:, 0], tiles[:, 1]], dim=-1)
    bottom = torch.cat([tiles[:, 2], tiles[:, 3]], dim=-1)
    assert torch.equal(torch.cat([top, bottom], dim=-2), images)
    with pytest.raises(ValueError, match="even sides"):
        V.tiles_2x2(random_uint8(batch, 2 * half_height + 1, 2 * half_width, seed))


@FEW
@given(batch=BATCH, height=SIDE, width=SIDE, p=st.floats(0.0, 1.0), seed=SEED)
def test_grayscale_and_flips_are_per_image_and_keep_the_range(batch, height, width, p, seed):
    images = V.to_float(random_uint8(batch, height, width, seed))
    gray = V.grayscale(images)
    assert gray.shape == images.shape
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert gray.min() >= 0 and gray.max() <= 1 + 1e-6  # luma weights sum to one
    some_gray = V.random_grayscale(images, p, gen(seed))
    flipped = V.random_hflip(images, p, gen(seed))
    for b in range(batch):
        assert torch.equal(some_gray[b], images[b]) or torch.equal(some_gray[b], gray[b])
        assert torch.equal(flipped[b], images[b]) or torch.equal(flipped[b], images[b].flip(-1))
    as_uint8 = V.random_hflip(random_uint8(batch, height, width, seed), p, gen(seed))
    assert as_uint8.dtype == torch.uint8


@FEW
@given(
    batch=BATCH,
    height=SIDE,
    width=SIDE,
    strength=st.floats(0.0, 2.0),
    p=st.floats(0.0, 1.0),
    seed=SEED,
)
def test_color_jitter_stays_in_range(batch, height, width, strength, p, seed):
    images = V.to_float(random_uint8(batch, height, width, seed))
    out = V.color_jitter(images, gen(seed), strength, strength, strength, p=p)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(V.color_jitter(images, gen(seed), strength, strength, strength, p=0), images)


@FEW
@given(
    batch=BATCH,
    image_size=st.integers(8, 64),
    half_crop=st.integers(2, 16),
    plain_crop=st.booleans(),
    kernels=st.lists(st.sampled_from(V.RESIZE_KERNELS), min_size=1, max_size=5, unique=True),
    jitter=st.sampled_from([0.0, 0.4]),
    seed=SEED,
)
def test_counting_views_for_any_image_size(
    batch, image_size, half_crop, plain_crop, kernels, jitter, seed
):
    crop = 2 * half_crop
    scale = [1.0, 1.0] if plain_crop else [0.3, 1.0]
    config = CountingConfig(
        num_counts=8,
        head_hidden=[8],
        crop_size=crop,
        crop_scale=scale,
        downsample_kernels=kernels,
        color_jitter=jitter,
    )
    task = Counting(config, build_backbone("resnet18", width=0.125, stem="small", num_stages=1))
    if image_size < task.min_image_size():  # plain crops larger than the image: refused by
        return  # train.prepare, which names data.image_size
    images = random_uint8(batch, image_size, image_size, seed)
    views = task.make_views(images, gen(seed))
    s = half_crop
    assert views["tiles"].shape == (4 * batch, 3, s, s) and views["down"].shape == (batch, 3, s, s)
    assert views["down_other"].shape == (batch, 3, s, s)
    low = torch.tensor([(0 - m) / d for m, d in zip(MEAN, STD)]).view(1, 3, 1, 1) - 1e-4
    high = torch.tensor([(1 - m) / d for m, d in zip(MEAN, STD)]).view(1, 3, 1, 1) + 1e-4
    for name in ("tiles", "down", "down_other"):
        view = views[name]
        assert view.dtype == torch.float32 and torch.isfinite(view).all()
        assert (view >= low).all() and (view <= high).all(), name
