import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.config import load_yaml, merge, parse_overrides, resolve
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.presets import config_file
from selfsup.tasks import task_config_class
from selfsup.tasks.counting import Counting, CountingConfig, counting_loss


def naive_counting_loss(tiles, down, other, margin):
    """The paper's loss written per sample with explicit loops."""
    total = 0.0
    for b in range(tiles.shape[0]):
        tile_sum = sum(tiles[b, j] for j in range(4))
        equivariance = sum((down[b, i] - tile_sum[i]) ** 2 for i in range(tiles.shape[2]))
        contrast = sum((other[b, i] - tile_sum[i]) ** 2 for i in range(tiles.shape[2]))
        total += equivariance + max(0.0, margin - contrast)
    return total / tiles.shape[0]


def test_loss_matches_naive_reference():
    torch.manual_seed(0)
    tiles, down, other = torch.rand(5, 4, 7), torch.rand(5, 7) * 3, torch.rand(5, 7) * 2
    loss, _, _ = counting_loss(tiles, down, other, margin=10.0)
    expected = naive_counting_loss(tiles, down, other, 10.0)
    assert torch.allclose(loss, torch.tensor(float(expected)), atol=1e-5)


def test_hinge_is_on_the_whole_vector_norm_not_per_element():
    tile_sum_zero = torch.zeros(1, 4, 2)
    other = torch.tensor([[3.0, 0.0]])  # |.|^2 = 9 < M = 10 -> hinge active with value 1
    loss, eq, contrast = counting_loss(tile_sum_zero, torch.zeros(1, 2), other, 10.0)
    assert torch.isclose(loss, torch.tensor(1.0)) and eq == 0 and contrast == 9


class SumPooling(nn.Module):
    """A linear phi: per-channel sums of the pixels. Sum over tiles == sum over the image."""

    num_features = 3

    def forward(self, x):
        return x.sum(dim=(2, 3))


def test_equivariance_term_is_zero_for_linear_sum_pooling():
    x = torch.rand(6, 3, 16, 16)
    tiles = x.reshape(6, 3, 2, 8, 2, 8).permute(0, 2, 4, 1, 3, 5).reshape(6, 4, 3, 8, 8)
    phi = SumPooling()
    # Area downsampling (2x2 mean) times 4 keeps the pixel sum: phi(D x) * 4 = sum phi(T_j x).
    down = nn.functional.avg_pool2d(x, 2) * 4
    phi_tiles = torch.stack([phi(tiles[:, j]) for j in range(4)], dim=1)
    _, equivariance, _ = counting_loss(phi_tiles, phi(down), phi(down.roll(1, 0)), 10.0)
    assert equivariance.abs() < 1e-3


def small_counting_task(**overrides) -> Counting:
    from selfsup.train import build_model

    values = {
        "task": "counting",
        "backbone": {"name": "alexnet_small"},
        "counting": {"num_counts": 64, "head_hidden": [64], "crop_size": 16, **overrides},
    }
    return build_model(resolve(values, task_config_class))


def test_views_have_paper_shapes_and_run_six_branches():
    task = small_counting_task()
    images = torch.randint(0, 255, (6, 3, 24, 24), dtype=torch.uint8)
    views = task.make_views(images, torch.Generator().manual_seed(0))
    assert views["tiles"].shape == (24, 3, 8, 8) and views["down"].shape == (6, 3, 8, 8)
    assert views["down_other"].shape == (6, 3, 8, 8)
    out = task(views)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert 0 <= out["active_units"] <= 64


def unnormalized(view: torch.Tensor) -> torch.Tensor:
    """A normalised view back in [0, 1]."""
    return view * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def is_gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N,) bool: all three channels equal."""
    return ((images - images.mean(dim=1, keepdim=True)).abs() < 1e-5).flatten(1).all(dim=1)


def colourful_images(batch: int, seed: int) -> torch.Tensor:
    """uint8 (B, 3, 16, 16) noise whose channels differ everywhere, so luma != mean."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 120, (batch, 3, 16, 16), generator=g)
    images[:, 0] += 130  # red well above green and blue
    return images.to(torch.uint8)


def exact_views(**overrides):
    """Counting with x = the image itself (plain crop of its full size, no flip)."""
    settings = {"crop_size": 16, "crop_scale": [1.0, 1.0], "hflip_prob": 0.0, **overrides}
    return small_counting_task(**settings)


def test_colour_mode_is_one_per_sample_for_tiles_down_and_other():
    """The paper: colour 33 % and grayscale 67 % of the time, "consistent across all the terms
    in the loss", grayscale "by replicating the average color across all 3 channels"."""
    task = exact_views(grayscale_prob=0.67)
    modes = []
    for seed in range(10):
        images = colourful_images(64, seed)
        views = task.make_views(images, torch.Generator().manual_seed(seed))
        tiles = unnormalized(views["tiles"]).view(64, 4, 3, 8, 8)
        gray_tiles = torch.stack([is_gray(tiles[:, j]) for j in range(4)], dim=1)  # (B, 4)
        gray_down = is_gray(unnormalized(views["down"]))
        gray_other = is_gray(unnormalized(views["down_other"]))
        # Never a sample with colour in one term and gray in another.
        assert (gray_tiles == gray_down[:, None]).all() and (gray_other == gray_down).all()
        x = images.float() / 255
        whole = V.tiles_2x2(x)  # (B, 4, 3, 8, 8)
        average = V.tiles_2x2(x.mean(dim=1, keepdim=True).expand_as(x))
        luma = V.tiles_2x2(V.grayscale(x))
        for b in range(64):
            expected = average[b] if gray_down[b] else whole[b]
            assert torch.allclose(tiles[b], expected, atol=1e-5), b
            if gray_down[b]:
                assert not torch.allclose(tiles[b], luma[b], atol=1e-2)  # not luma
        modes.append(gray_down)
    share = torch.cat(modes).float().mean().item()
    assert abs(share - 0.67) < 0.06, share  # 640 draws: 3 standard deviations are 0.056


@pytest.mark.parametrize("kernels", [["bilinear", "bicubic", "area", "lanczos"], ["nearest"]])
def test_down_views_are_this_and_another_image_downsampled_alike(kernels):
    """D x and D y of a sample come from one kernel of the configured ones and one colour
    mode; y is another image of the batch, never x itself."""
    task = exact_views(grayscale_prob=0.5, downsample_kernels=kernels)
    images = colourful_images(8, seed=3)
    views = task.make_views(images, torch.Generator().manual_seed(1))
    down, other = unnormalized(views["down"]), unnormalized(views["down_other"])
    x = images.float() / 255
    gray = is_gray(down)
    for b in range(8):
        mode = V.grayscale(x, V.CHANNEL_MEAN) if gray[b] else x
        matches = [
            (kernel, j)
            for kernel in kernels
            for j in range(8)
            if j != b
            and torch.allclose(down[b], V.resize(mode[b : b + 1], 8, kernel)[0], atol=1e-5)
            and torch.allclose(other[b], V.resize(mode[j : j + 1], 8, kernel)[0], atol=1e-5)
        ]
        assert matches, f"sample {b}: D x and D y are not one kernel's views of x and y != x"


def test_grayscale_is_the_channel_average():
    images = torch.rand(2, 3, 4, 4)
    gray = V.grayscale(images, V.CHANNEL_MEAN)
    assert torch.allclose(gray, images.mean(dim=1, keepdim=True).expand_as(images), atol=1e-6)


def test_training_lowers_the_counting_loss():
    torch.manual_seed(0)
    task = small_counting_task()
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    images = torch.randint(0, 255, (32, 3, 16, 16), dtype=torch.uint8)
    losses = []
    for step in range(40):
        views = task.make_views(images, torch.Generator().manual_seed(step))
        loss = task(views)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_config_defaults_are_the_papers_loss_settings():
    cfg = CountingConfig()
    assert cfg.num_counts == 1000 and cfg.margin == 10.0


def test_paper_preset_trains_one_step_at_the_papers_size_on_cpu(tmp_path):
    """counting_alexnet_imagenet as shipped (AlexNet, fc6/fc7 of 4096, 256 px images, 228 px
    crops, 114 px tiles and D(x), lr 1e-4 dropped by 0.9 every 10,000 steps) takes one
    training step with a batch of 2 on the CPU: a finite loss, every weight updated."""
    from selfsup.train import build_model, learning_rate, train

    images = np.random.default_rng(0).integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", images=images)
    overrides = parse_overrides(
        [f"data.path={tmp_path / 'images.npz'}", "data.batch_size=2", "data.workers=0",
         "train.steps=1", "train.device=cpu", "train.precision=fp32"]
    )  # fmt: skip
    preset = load_yaml(config_file("counting_alexnet_imagenet"))
    cfg = resolve(merge(preset, overrides), task_config_class)
    assert learning_rate(0, 350_000, cfg.optim) == pytest.approx(1e-4)
    assert learning_rate(10_000, 350_000, cfg.optim) == pytest.approx(0.9e-4)
    initial = build_model(cfg)  # seeded: the run starts from these weights
    batch = torch.from_numpy(images[:2]).permute(0, 3, 1, 2)
    views = initial.make_views(batch, torch.Generator().manual_seed(0))
    assert views["tiles"].shape == (8, 3, 114, 114)
    assert views["down"].shape == views["down_other"].shape == (2, 3, 114, 114)
    run = train(cfg, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1 and math.isfinite(record["loss"])
    before, after = initial.state_dict(), run.model.state_dict()
    weights = [name for name in before if name.endswith("weight")]
    assert len(weights) > 10 and all(not torch.equal(before[n], after[n]) for n in weights)
