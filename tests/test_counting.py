import torch
from torch import nn

from selfsup.config import resolve
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


def test_views_have_paper_shapes_and_never_pair_an_image_with_itself():
    task = small_counting_task()
    images = torch.randint(0, 255, (6, 3, 24, 24), dtype=torch.uint8)
    views = task.make_views(images, torch.Generator().manual_seed(0))
    assert views["tiles"].shape == (24, 3, 8, 8) and views["down"].shape == (6, 3, 8, 8)
    assert (views["other"] != torch.arange(6)).all()
    out = task(views)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert 0 <= out["active_units"] <= 64


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
