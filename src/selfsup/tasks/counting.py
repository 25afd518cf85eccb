"""Learning to count (Noroozi, Pirsiavash, Favaro, ICCV 2017).

A feature phi: image -> R^k ending in a ReLU counts visual primitives. Counting is equivariant
to tiling: the counts of a downsampled image D(x) equal the sum of the counts of its four
tiles T_1..T_4(x). With y another image (its downsampled version D(y)), the loss is

    l(x, y) = |phi(D x) - sum_j phi(T_j x)|^2 + max(0, M - |phi(D y) - sum_j phi(T_j x)|^2)

with squared L2 norms of whole k-vectors and the hinge on that norm. The second (contrastive)
term rules out the trivial phi = 0. Shortcut guards, as in the paper: the downsampling kernel
is drawn from OpenCV's bicubic, bilinear, Lanczos and area (so tiles and downsampled images
cannot be told apart by one kernel's resampling artefacts), and the images are grayscale
(the average of R, G and B in all three channels) 67 % of the time (so chromatic aberration
cannot be used). Both choices are made per sample and hold for every term of its loss: its
tiles, D x and D y.

The six branches of the paper (4 tiles, D x, D y) share weights, so they run as one batched
forward of 6B images. y is another image of the same batch (a random cyclic shift of the
batch, which never pairs an image with itself), brought to x's colour mode and downsampled
with x's kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

# "we randomly pick either the bicubic, bilinear, lanczos, or the area method as defined in
# OpenCV" (Noroozi et al. 2017): four kernels, no nearest.
PAPER_KERNELS = ("bilinear", "bicubic", "area", "lanczos")


@dataclass
class CountingConfig:
    num_counts: int = param(1000, "k, the size of the counting vector (paper: 1000).", low=1)
    margin: float = param(10.0, "M, the hinge margin on the squared norm (paper: 10).", low=0.0)
    crop_size: int = param(
        32, "Side 2s of the crop x; tiles and D(x) are s x s (paper: 228).", low=4
    )
    crop_scale: list[float] = fraction_range(
        [0.3, 1.0],
        "Area fraction range of a random crop that is resized to crop_size; [1, 1] takes plain "
        "crop_size crops (the paper's 228 px crops of 256 px images). On 32 px images, "
        "[0.3, 1] beat [1, 1] in our probes: upscaled crops make tiles and D(x) equally sharp.",
    )
    downsample_kernels: list[str] = param(
        list(PAPER_KERNELS),
        "Kernels D draws from per sample, each as OpenCV's cv2.resize defines it (paper: "
        "bilinear, bicubic, area, lanczos; at exactly 2x bilinear equals area). `nearest` "
        "is also available.",
        choices=V.RESIZE_KERNELS,
        min_items=1,
    )
    grayscale_prob: float = probability(
        0.67,
        "Probability that a sample is grayscale (the mean of R, G, B in all three channels) "
        "in every term of its loss: tiles, D(x) and D(y) (paper: 0.67).",
    )
    hflip_prob: float = probability(0.5, "Probability of mirroring x.")
    color_jitter: float = param(
        0.0,
        "Brightness/contrast/saturation jitter strength (0: off; the paper uses none).",
        low=0.0,
    )
    head_pool: int = param(
        1,
        "The final feature map is average-pooled to head_pool x head_pool "
        "and flattened into the head (3 keeps AlexNet's 3x3 pool5 at 114 px).",
        low=1,
    )
    head_hidden: list[int] = param(
        [1024],
        "Hidden widths of the fully connected head before "
        "the k outputs (paper: fc6, fc7 = 4096, 4096).",
    )

    def check(self, prefix: str) -> None:
        if self.crop_size % 2:
            raise ConfigError(f"{prefix}.crop_size: must be even (2s), got {self.crop_size}")


def counting_loss(
    phi_tiles: torch.Tensor, phi_down: torch.Tensor, phi_other: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The counting loss and its two terms, averaged over the batch.

    phi_tiles (B, 4, k), phi_down = phi(D x) (B, k), phi_other = phi(D y) (B, k).
    Returns (loss, equivariance term, contrastive distance |phi(D y) - sum phi(T x)|^2).

    >>> import torch, selfsup
    >>> tiles = torch.ones(2, 4, 3)  # phi of each image's four tiles: (B, 4, k)
    >>> down = tiles.sum(1)  # phi(D x), the sum of its tiles' counts: equivariant
    >>> other = torch.zeros(2, 3)  # phi(D y) of other images, far from that sum
    >>> loss, equivariance, contrast = selfsup.counting_loss(tiles, down, other, margin=10.0)
    >>> loss.item(), equivariance.item(), contrast.item()
    (0.0, 0.0, 48.0)
    """
    tile_sum = phi_tiles.sum(dim=1)  # (B, k)
    equivariance = (phi_down - tile_sum).pow(2).sum(dim=1)  # (B,)
    contrast = (phi_other - tile_sum).pow(2).sum(dim=1)  # (B,)
    loss = equivariance + torch.relu(margin - contrast)
    return loss.mean(), equivariance.mean(), contrast.mean()


class CountingHead(nn.Module):
    """Feature map -> pooled grid -> fully connected layers -> k non-negative counts."""

    def __init__(self, channels: int, pool: int, hidden: list[int], num_counts: int):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
        width = channels * pool * pool
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers += [nn.Linear(width, num_counts), nn.ReLU()]  # counts are non-negative
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # (B, k)


@register_task
class Counting(PretextTask):
    name = "counting"
    config_class = CountingConfig

    def __init__(self, config: CountingConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.head = CountingHead(
            backbone.num_features, config.head_pool, config.head_hidden, config.num_counts
        )

    def min_image_size(self) -> int:
        return self.config.crop_size if self.config.crop_scale == [1.0, 1.0] else 2

    def phi(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, s, s) normalised -> (N, k) counts."""
        return self.head(self.backbone(images))

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """uint8 (B, 3, S, S) -> normalised tiles (4B, 3, s, s), D x and D y (B, 3, s, s)."""
        cfg = self.config
        size = cfg.crop_size
        batch = images.shape[0]
        if cfg.crop_scale == [1.0, 1.0]:
            x = V.to_float(V.random_crop(images, size, generator))  # (B, 3, 2s, 2s)
        else:
            x = V.random_resized_crop(images, size, generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        if cfg.color_jitter > 0:
            s = cfg.color_jitter
            x = V.color_jitter(x, generator, brightness=s, contrast=s, saturation=s)
        shift = int(torch.randint(1, batch, (1,), generator=generator)) if batch > 1 else 0
        other = (torch.arange(batch) + shift) % batch  # y_i = x_{other[i]}
        # One colour mode per sample for all of its terms (the paper: "we make this choice
        # consistent across all the terms in the loss"): a y in another mode than x would let
        # colour alone satisfy the contrastive term. D y takes x's kernel too, as the paper's
        # one draw per iteration downsamples D x and D y alike.
        gray = torch.rand(batch, generator=generator) < cfg.grayscale_prob  # (B,)
        kernel = torch.randint(0, len(cfg.downsample_kernels), (batch,), generator=generator)
        x_and_y = torch.cat([x, x[V.on_device(other, x.device)]])  # (2B, 3, 2s, 2s)
        x_and_y = V.grayscale_where(x_and_y, gray.repeat(2), V.CHANNEL_MEAN)
        down = V.resize_each(
            x_and_y, size // 2, tuple(cfg.downsample_kernels), kernel.repeat(2)
        )  # (2B, 3, s, s): D x, then D y
        tiles = V.tiles_2x2(x_and_y[:batch]).flatten(0, 1)  # (4B, 3, s, s)
        return {
            "tiles": V.normalize(tiles, MEAN, STD),
            "down": V.normalize(down[:batch], MEAN, STD),
            "down_other": V.normalize(down[batch:], MEAN, STD),
        }

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """A row per image x: its four tiles, D(x) and the other image's D(y)."""
        down = views["down"][:count]
        tiles = views["tiles"][: 4 * len(down)].view(len(down), 4, *down.shape[1:])
        rows = torch.cat([tiles, down[:, None], views["down_other"][: len(down), None]], 1)
        labels = ["T1", "T2", "T3", "T4", "D x", "D y"] * len(down)
        return {"tiles_and_downsampled": labelled_grid(display(rows.flatten(0, 1)), labels, 6)}

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tiles, down, down_other = views["tiles"], views["down"], views["down_other"]
        batch = down.shape[0]
        # One pass for the six branches: 4B tiles, B D x, B D y.
        phi = self.phi(torch.cat([tiles, down, down_other])).float()  # (6B, k)
        phi_tiles = phi[: 4 * batch].view(batch, 4, -1)  # (B, 4, k)
        phi_down = phi[4 * batch : 5 * batch]  # phi(D x), (B, k)
        phi_other = phi[5 * batch :]  # phi(D y), (B, k)
        loss, equivariance, contrast = counting_loss(
            phi_tiles, phi_down, phi_other, self.config.margin
        )
        active = (phi_down > 0).any(dim=0).float().sum()  # units non-zero somewhere in batch
        return {
            "loss": loss,
            "equivariance": equivariance.detach(),
            "contrast": contrast.detach(),
            "active_units": active,
        }
