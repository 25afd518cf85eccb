import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfsup.data import views as V


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_takes_exact_pixels_at_independent_positions():
    images = torch.arange(4 * 3 * 10 * 10, dtype=torch.float32).view(4, 3, 10, 10)
    crops = V.random_crop(images, 4, gen())
    assert crops.shape == (4, 3, 4, 4)
    for b in range(4):
        top, left = divmod(int(crops[b, 0, 0, 0] - images[b, 0, 0, 0]), 10)
        assert torch.equal(crops[b], images[b, :, top : top + 4, left : left + 4])


def test_tiles_2x2_reassemble_the_image():
    images = torch.randn(2, 3, 8, 8)
    tiles = V.tiles_2x2(images)  # (B, 4, C, 4, 4)
    assert torch.equal(tiles[:, 0], images[:, :, :4, :4])
    assert torch.equal(tiles[:, 1], images[:, :, :4, 4:])
    assert torch.equal(tiles[:, 2], images[:, :, 4:, :4])
    assert torch.equal(tiles[:, 3], images[:, :, 4:, 4:])


@pytest.mark.parametrize("kernel", V.RESIZE_KERNELS)
def test_every_kernel_halves_a_constant_image_exactly(kernel):
    images = torch.full((2, 3, 16, 16), 0.25)
    out = V.resize(images, 8, kernel)
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-5)


def test_random_kernel_resize_matches_per_image_resize():
    images = torch.rand(12, 3, 16, 16)
    out = V.resize_random_kernel(images, 8, V.RESIZE_KERNELS, gen(5))
    choice = torch.randint(0, len(V.RESIZE_KERNELS), (12,), generator=gen(5))
    for b in range(12):
        expected = V.resize(images[b : b + 1], 8, V.RESIZE_KERNELS[choice[b]])
        assert torch.allclose(out[b : b + 1], expected, atol=1e-6)


def test_grayscale_flip_and_jitter():
    images = torch.rand(64, 3, 8, 8)
    gray = V.random_grayscale(images, 1.0, gen())
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.equal(V.random_grayscale(images, 0.0, gen()), images)
    flipped = V.random_hflip(images, 0.5, gen())
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54
    jittered = V.color_jitter(images, gen())
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.equal(jittered, images)


def test_views_are_reproducible_from_the_generator():
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    a = V.random_resized_crop(images, 16, gen(1))
    b = V.random_resized_crop(images, 16, gen(1))
    assert a.shape == (8, 3, 16, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(8, 70),
    width=st.integers(8, 70),
    crop=st.integers(2, 8),
    batch=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_view_builders_give_right_shapes_for_any_size(height, width, crop, batch, seed):
    crop = 2 * crop
    images = torch.randint(0, 255, (batch, 3, height, width), dtype=torch.uint8)
    if crop <= min(height, width):
        assert V.random_crop(images, crop, gen(seed)).shape == (batch, 3, crop, crop)
    resized = V.random_resized_crop(images, crop, gen(seed))
    assert resized.shape == (batch, 3, crop, crop) and torch.isfinite(resized).all()
    down = V.resize_random_kernel(resized, crop // 2, V.RESIZE_KERNELS, gen(seed))
    assert down.shape == (batch, 3, crop // 2, crop // 2)
    assert V.tiles_2x2(resized).shape == (batch, 4, 3, crop // 2, crop // 2)


def test_hue_shift_matches_torchvision_per_image():
    import torchvision.transforms.functional as TF

    torch.manual_seed(0)
    images = torch.rand(6, 3, 9, 9)
    images[0] = 0.5  # gray: no hue to turn
    images[1, :, :3] = 0.0  # black rows
    turns = torch.tensor([0.1, -0.3, 0.25, 0.5, -0.5, 0.0])
    ours = V.shift_hue(images, turns)
    reference = torch.stack([TF.adjust_hue(images[i], float(turns[i])) for i in range(6)])
    assert torch.allclose(ours, reference, atol=1e-5)


def test_hue_jitter_keeps_value_and_saturation_and_replays_without_hue():
    images = torch.rand(8, 3, 12, 12, generator=gen(3))
    shifted = V.color_jitter(images, gen(), 0.0, 0.0, 0.0, p=1.0, hue=0.4)
    assert not torch.allclose(shifted, images, atol=1e-3)
    assert torch.allclose(shifted.amax(1), images.amax(1), atol=1e-5)  # value (HSV) kept
    spread = lambda x: x.amax(1) - x.amin(1)  # noqa: E731
    assert torch.allclose(spread(shifted), spread(images), atol=1e-5)  # so saturation too
    # hue=0 draws nothing: the same views as a call that never heard of hue.
    plain = V.color_jitter(images, gen(), 0.4, 0.4, 0.4, p=0.8)
    assert torch.equal(V.color_jitter(images, gen(), 0.4, 0.4, 0.4, p=0.8, hue=0.0), plain)
    assert torch.equal(V.color_jitter(images, gen(), 0.4, 0.4, 0.4, p=0.0, hue=0.3), images)
