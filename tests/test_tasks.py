"""The multi-task paper's single tasks: targets on hand-built inputs, losses against naive
references, colour conversion against known values, and masks carried with their images."""

import itertools

import numpy as np
import pytest
import torch

from selfsup.config import ConfigError, parse_overrides, resolve
from selfsup.data import ImageStream, decode_all, open_source
from selfsup.data import views as V
from selfsup.data.decode import fit_mask_to_square, fit_to_square
from selfsup.data.sources import DataFormatError
from selfsup.tasks import MEAN, STD, task_config_class
from selfsup.tasks.colorization import AB_STEP, ab_bins, encode_ab, rebalance_weights
from selfsup.tasks.exemplar import info_nce_loss, triplet_loss
from selfsup.tasks.jigsaw import (
    lexicographic_permutations,
    maximal_hamming_permutations,
    shuffle_tiles,
    unshuffle_tiles,
)
from selfsup.tasks.motion_segmentation import crop_and_flip_with_masks
from selfsup.tasks.relative_position import NEIGHBOURS, RelativePositionConfig, sample_patch_pair
from selfsup.tasks.rotation import all_rotations
from selfsup.train import build_model, train
from tests.helpers import TINY


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_task(name: str, **settings):
    values = {"task": name, "backbone": {"name": "alexnet_small"}, name: settings}
    return build_model(resolve(values, task_config_class))


def coordinate_images(batch: int, size: int = 32) -> torch.Tensor:
    """uint8 images whose pixel (y, x) holds y in channel 0 and x in channel 1."""
    rows = torch.arange(size).view(size, 1).expand(size, size)
    cols = torch.arange(size).view(1, size).expand(size, size)
    image = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8)
    return image.expand(batch, 3, size, size).contiguous()


def grid_cell(top: torch.Tensor, left: torch.Tensor, origin_top, origin_left, step: int):
    """Row and column (0..2) of the grid cell a patch corner falls in."""
    row = torch.div(top - origin_top + step // 2, step, rounding_mode="floor")
    col = torch.div(left - origin_left + step // 2, step, rounding_mode="floor")
    return row, col


# --- relative position ------------------------------------------------------------------------


def test_relative_position_label_is_the_neighbours_grid_cell():
    cfg = RelativePositionConfig(patch_size=6, gap=4, jitter=1)
    images = coordinate_images(64)
    centre, neighbour, labels = sample_patch_pair(images, cfg, gen(3))
    assert centre.shape == neighbour.shape == (64, 3, 6, 6)
    step = cfg.patch_size + cfg.gap
    # Corners in image coordinates, read from the pixels themselves.
    dy = neighbour[:, 0, 0, 0].long() - centre[:, 0, 0, 0].long()
    dx = neighbour[:, 1, 0, 0].long() - centre[:, 1, 0, 0].long()
    row = torch.div(dy + step // 2, step, rounding_mode="floor") + 1
    col = torch.div(dx + step // 2, step, rounding_mode="floor") + 1
    cell = row * 3 + col
    assert torch.equal(cell, torch.tensor(NEIGHBOURS)[labels])
    # Gaps minus jitter keep the patches apart: they never overlap or touch.
    apart = (dy.abs() >= step - 2 * cfg.jitter) | (dx.abs() >= step - 2 * cfg.jitter)
    assert apart.all() and set(labels.tolist()) == set(range(8))


def test_relative_position_rejects_jitter_that_closes_the_gap():
    with pytest.raises(ConfigError, match=r"relative-position\.jitter"):
        small_task("relative-position", gap=2, jitter=1)


def test_colour_dropping_keeps_one_channel_and_noises_the_others():
    images = torch.randn(32, 3, 8, 8)
    dropped = V.drop_color_channels(images, gen(), noise_scale=0.01)
    kept = (dropped == images).flatten(2).all(2)  # (B, 3)
    assert (kept.sum(1) == 1).all()
    noise = dropped[~kept].flatten(1).std(1)
    assert (noise < 0.05).all() and (noise > 0).all()


# --- colorization -----------------------------------------------------------------------------


def test_lab_conversion_matches_known_colours():
    colours = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    lab = V.rgb_to_lab(colours.T.reshape(1, 3, 5, 1))[0, :, :, 0].T
    expected = torch.tensor(
        [
            [100.0, 0.0, 0.0],
            [53.24, 80.09, 67.20],
            [87.73, -86.18, 83.18],
            [32.30, 79.19, -107.86],
            [0.0, 0.0, 0.0],
        ]
    )
    assert torch.allclose(lab, expected, atol=0.02)
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.allclose(V.lab_to_rgb(V.rgb_to_lab(rgb)), rgb, atol=1e-4)


def test_ab_bins_are_the_in_gamut_cells_of_a_10_grid():
    bins = ab_bins()
    assert bins.shape == (261, 2)
    assert torch.equal(bins, torch.round(bins / AB_STEP) * AB_STEP)
    # Every 8-bit colour of a coarse sample falls into a kept bin.
    levels = torch.arange(0, 256, 17).float() / 255
    grid = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(1, 3, -1, 1)
    ab = V.rgb_to_lab(grid)[0, 1:, :, 0].T  # (M, 2)
    nearest = torch.cdist(ab, bins).min(dim=1).values
    assert nearest.max() <= 5 * 2**0.5 + 1e-4  # inside its cell: at most half a diagonal away


@pytest.mark.parametrize(
    "colour,expected_ab", [((255, 0, 0), (80.0, 70.0)), ((128, 128, 128), (0.0, 0.0))]
)
def test_pure_colour_image_targets_its_ab_bin(colour, expected_ab):
    task = small_task("colorization", soft_encoding=False, crop_scale=[1.0, 1.0])
    images = torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 32, 32)
    views = task.make_views(images.contiguous(), gen())
    assert views["bins"].shape == (2, 1, 8, 8) and (views["weights"] == 1).all()
    index = int((ab_bins() == torch.tensor(expected_ab)).all(dim=1).nonzero())
    assert (views["bins"] == index).all()
    lightness = views["lightness"] * torch.tensor(STD).view(1, 3, 1, 1)
    lightness = lightness + torch.tensor(MEAN).view(1, 3, 1, 1)
    expected_l = V.rgb_to_lab(images[:1].float() / 255)[0, 0, 0, 0] / 100
    assert torch.allclose(lightness, expected_l.expand_as(lightness), atol=1e-5)


def test_soft_encoding_weights_the_nearest_bins():
    bins = ab_bins()
    ab = torch.tensor([[3.0, -2.0], [47.0, 51.0]]).view(2, 2, 1, 1)
    index, weights = encode_ab(ab, bins, neighbors=5, sigma=5.0)
    assert index.shape == weights.shape == (2, 5, 1, 1)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 1, 1))
    assert torch.equal(bins[index[0, 0, 0, 0]], torch.tensor([0.0, 0.0]))
    assert torch.equal(bins[index[1, 0, 0, 0]], torch.tensor([50.0, 50.0]))
    assert (weights[:, :1] >= weights[:, 1:]).all()  # the nearest bin weighs the most


def test_rebalancing_weights_have_prior_mean_one_and_favour_rare_bins():
    q = len(ab_bins())
    kernel = torch.eye(q)  # no smoothing: checks the formula itself
    assert torch.allclose(rebalance_weights(torch.ones(q), kernel, 0.5), torch.ones(q))
    counts = torch.rand(q) * 100
    weights = rebalance_weights(counts, kernel, 0.5)
    prior = counts / counts.sum()
    assert torch.isclose((prior * weights).sum(), torch.tensor(1.0))
    assert weights[counts.argmin()] > weights[counts.argmax()]


def test_decode_gives_back_the_predicted_colour():
    task = small_task("colorization")
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    lab = V.rgb_to_lab(red)
    index = int((ab_bins() == torch.tensor([80.0, 70.0])).all(dim=1).nonzero())
    logits = torch.full((1, len(ab_bins()), 2, 2), -20.0)
    logits[:, index] = 20.0
    for temperature in (0.0, 0.38):
        rgb = task.decode(logits, lab[:, :1], temperature)
        assert rgb.shape == (1, 3, 8, 8)
        assert torch.allclose(rgb, red, atol=0.06)
    assert task.colorize(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3, 32, 32)


# --- exemplar ---------------------------------------------------------------------------------


def naive_triplet(anchor, positive, margin):
    total, count = 0.0, 0
    for a, p in ((anchor, positive), (positive, anchor)):
        for i in range(len(a)):
            for j in range(len(a)):
                if i != j:
                    d_pos = 1 - float(a[i] @ p[i])
                    d_neg = 1 - float(a[i] @ p[j])
                    total += max(0.0, margin + d_pos - d_neg)
                    count += 1
    return total / count


def naive_info_nce(anchor, positive, temperature):
    z = torch.cat([anchor, positive])
    n, total = len(anchor), 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        logits = torch.stack([z[i] @ z[j] / temperature for j in others])
        total += -float(torch.log_softmax(logits, 0)[others.index(partner)])
    return total / (2 * n)


def test_exemplar_losses_match_naive_references():
    torch.manual_seed(0)
    anchor = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    positive = torch.nn.functional.normalize(anchor + 0.5 * torch.randn(5, 8), dim=1)
    assert float(triplet_loss(anchor, positive, 0.5)) == pytest.approx(
        naive_triplet(anchor, positive, 0.5), abs=1e-5
    )
    assert float(info_nce_loss(anchor, positive, 0.1)) == pytest.approx(
        naive_info_nce(anchor, positive, 0.1), abs=1e-4
    )


def test_exemplar_views_are_two_different_augmentations_of_each_image():
    task = small_task("exemplar", loss="infonce")
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    views = task.make_views(images, gen())["views"]
    assert views.shape == (8, 3, 32, 32) and not torch.equal(views[:4], views[4:])
    with pytest.raises(ConfigError, match="batch_size"):
        task.make_views(images[:1], gen())


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_labels_match_the_rotation_applied():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 0, 0] = 1  # a marker in the top-left corner
    rotated, labels = all_rotations(image)
    assert labels.tolist() == [0, 1, 2, 3]
    # Counter-clockwise quarter turns move the top-left corner to bottom-left, bottom-right,
    # top-right.
    corners = [(0, 0), (7, 0), (7, 7), (0, 7)]
    for k, (y, x) in enumerate(corners):
        assert rotated[k, 0, y, x] == 1 and rotated[k].sum() == 1
    task = small_task("rotation", hflip_prob=0.0)
    views = task.make_views(torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8), gen())
    assert (
        views["images"].shape == (12, 3, 16, 16) and views["rotation"].tolist() == [0, 1, 2, 3] * 3
    )
    base = views["images"][0::4]
    for k in range(4):
        assert torch.equal(views["images"][k::4], torch.rot90(base, k, dims=(2, 3)))


# --- jigsaw -----------------------------------------------------------------------------------


def test_lexicographic_permutations_match_itertools():
    expected = np.array(list(itertools.permutations(range(5))))
    assert np.array_equal(lexicographic_permutations(5), expected)


def test_hamming_permutations_are_deterministic_distinct_and_far_apart():
    first = maximal_hamming_permutations(100, 0)
    assert first.shape == (100, 9) and np.array_equal(first, maximal_hamming_permutations(100, 0))
    assert not np.array_equal(first, maximal_hamming_permutations(100, 1))
    assert len({tuple(p) for p in first}) == 100
    assert (np.sort(first, axis=1) == np.arange(9)).all()
    distances = (first[:, None] != first[None]).sum(-1)[np.triu_indices(100, 1)]
    assert distances.mean() > 8.0  # the paper's sets average ~8 of 9 positions apart


def test_jigsaw_permutation_recovers_the_original_tile_order():
    tiles = torch.arange(4 * 9).view(4, 9, 1, 1, 1).float()
    permutations = torch.from_numpy(maximal_hamming_permutations(10, 0))[:4]
    shuffled = shuffle_tiles(tiles, permutations)
    assert torch.equal(shuffled[:, :, 0, 0, 0] % 9, permutations)
    assert torch.equal(unshuffle_tiles(shuffled, permutations), tiles)


def test_jigsaw_views_hold_tiles_in_the_labelled_order():
    task = small_task(
        "jigsaw", num_permutations=10, standardize_tiles=False, grayscale_prob=0.0, jitter=0
    )
    cfg, batch = task.config, 16
    views = task.make_views(coordinate_images(batch), gen(2))
    tiles = views["tiles"].view(batch, 9, 3, cfg.tile_size, cfg.tile_size)
    pixels = tiles * torch.tensor(STD).view(1, 1, 3, 1, 1) + torch.tensor(MEAN).view(1, 1, 3, 1, 1)
    top = (pixels[:, :, 0, 0, 0] * 255).round().long()  # (B, 9) corners of the shown tiles
    left = (pixels[:, :, 1, 0, 0] * 255).round().long()
    step = cfg.tile_size + cfg.gap
    row, col = grid_cell(top, left, top.min(1, keepdim=True)[0], left.min(1, keepdim=True)[0], step)
    original_cell = row * 3 + col  # (B, 9): which grid cell each shown tile came from
    expected = task.permutations[views["permutation"]]
    assert torch.equal(original_cell, expected)


# --- motion segmentation ----------------------------------------------------------------------


def masked_images(batch: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random masks and images whose red channel is 255 x mask (so one can be read from the
    other after any geometric op)."""
    masks = (torch.rand(batch, size, size, generator=gen(7)) > 0.5).to(torch.uint8)
    images = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, generator=gen(8))
    images[:, 0] = masks * 255
    return images, masks


def test_mask_follows_the_same_crop_and_flip_as_its_image():
    images, masks = masked_images(16)
    x, m = crop_and_flip_with_masks(images, masks, gen(), (0.3, 1.0), 0.5)
    assert x.shape == (16, 3, 32, 32) and m.shape == (16, 32, 32)
    assert torch.allclose(x[:, 0], m, atol=1e-6)
    assert not torch.allclose(m, masks.float())  # the crops really moved things
    task = small_task("motion-segmentation", crop_scale=[1.0, 1.0], hflip_prob=1.0, output_stride=1)
    views = task.make_views(images, gen(), masks=masks)
    assert torch.equal(views["targets"], masks.flip(-1).float())
    red = views["images"][:, 0] * STD[0] + MEAN[0]
    assert torch.allclose(red, views["targets"], atol=1e-5)


def test_fitted_masks_stay_aligned_with_fitted_images():
    rng = np.random.default_rng(0)
    mask = (rng.random((48, 64)) > 0.6).astype(np.uint8)
    mask[10:30, 20:50] = 1  # a blob that survives downsampling
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = mask * 255
    fitted_image, fitted_mask = fit_to_square(image, 32, "x"), fit_mask_to_square(mask, 32)
    assert fitted_mask.shape == (32, 32) and fitted_mask.sum() > 50
    # Same resampling, so they agree except where a pixel is exactly half covered (a tie).
    agree = fitted_mask == (fitted_image[0] >= 128).to(torch.uint8)
    assert agree.float().mean() > 0.98


def test_npz_masks_reach_the_batches_in_both_modes(tmp_path):
    images, masks = masked_images(12, size=40)
    path = tmp_path / "frames.npz"
    np.savez(path, images=images.permute(0, 2, 3, 1).numpy(), masks=masks.numpy() * 255)
    source = open_source(path)
    assert source.masks is not None and source.masks.max() == 1
    kwargs = {"size": 32, "batch_size": 4, "seed": 1, "progress": False, "workers": 0}
    memory = ImageStream(source, mode="memory", **kwargs)
    stream = ImageStream(source, mode="stream", **kwargs)
    (_, x1, _, m1), (_, x2, _, m2) = next(memory.batches(0)), next(stream.batches(0))
    assert torch.equal(x1, x2) and torch.equal(m1, m2) and m1.shape == (4, 32, 32)
    assert (m1 == (x1[:, 0] >= 128).to(torch.uint8)).float().mean() > 0.98  # ties aside
    assert decode_all(source, 40, workers=0, progress=False).masks.shape == (12, 40, 40)


def test_bad_masks_are_clear_errors(tmp_path):
    images = np.zeros((3, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "a.npz", images=images, masks=np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(DataFormatError, match="masks"):
        open_source(tmp_path / "a.npz")


def test_motion_segmentation_without_masks_names_the_problem(tiny_npz, tmp_path):
    common = [item for item in TINY if not item.startswith("counting.")]
    overrides = [*common, f"data.path={tiny_npz}", "task=motion-segmentation", "train.steps=1"]
    cfg = resolve(parse_overrides(overrides), task_config_class)
    with pytest.raises(ConfigError, match="masks"):
        train(cfg, tmp_path / "run", progress=False)
