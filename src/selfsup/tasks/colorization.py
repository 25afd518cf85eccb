"""Colorization (Zhang, Isola, Efros, ECCV 2016), as used by Doersch & Zisserman 2017.

The image is converted to CIE Lab; the network sees only the lightness L (replicated to the
three channels the trunk expects) and predicts, per pixel of a `1/output_stride` resolution
map, a distribution over Q quantised ab colours:

    loss = - sum_{h,w} v(h, w) sum_q Z(h, w, q) log softmax(logits)(h, w, q) / (H W)

Z is the target: the bin of the pixel's ab (hard) or Zhang's soft encoding (the `soft_neighbors`
nearest bins weighted by a Gaussian of their distance, sigma `soft_sigma`). v is the class
rebalancing weight of the pixel's most likely bin, w = ((1 - lambda) p~ + lambda / Q)^-1
normalised so that E_p~[w] = 1, with p~ the bin prior smoothed by a Gaussian (sigma 5 in ab
units). Zhang estimate the prior once on ImageNet; here it is a running count of the target
bins of every training batch (a buffer, saved in checkpoints; under DDP rank 0's count is
broadcast with the other buffers), so it needs no pass over the data and fits any dataset.

ab bins: a regular grid of step 10 (centres at multiples of 10), restricted to the bins in the
sRGB gamut: a bin is kept if some sRGB colour quantises to it (ab within +-5 of its centre).
The colours tested are every 4th 8-bit level per channel plus 255 (65^3 colours), which keeps
the same bins as all 2^24 colours: Q = 261. (Zhang et al. keep Q = 313 with a gamut test
they do not spell out; for 8-bit sRGB under D65 this exact test gives 261.)

`decode(logits, lightness)` turns predictions into RGB with Zhang's annealed mean (temperature
0.38; 0 gives the mode) so users can look at the predicted colours; `colorize(images)` runs the
whole pipeline on uint8 images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from selfsup.backbones import Backbone
from selfsup.config import fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.trunk_input import lightness_channels
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.heads import DenseHead, feature_layer
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

AB_STEP = 10.0  # grid size of the ab quantisation (Zhang et al.)
PRIOR_SIGMA = 5.0  # smoothing of the empirical prior in ab units (Zhang et al.)


@dataclass
class ColorizationConfig:
    crop_scale: list[float] = fraction_range(
        [0.5, 1.0],
        "Area fraction range of the random-resized crop (resized to the image size); "
        "[1, 1] keeps whole images.",
    )
    hflip_prob: float = probability(0.5, "Probability of mirroring an image.")
    input_size: int = param(
        0,
        "Side the crop is resized to, the trunk's input (Zhang et al.: 224 px, predicting "
        "56 x 56); 0: the image size.",
        low=0,
    )
    output_stride: int = param(
        4, "Predictions and targets are at 1/output_stride of the input side (paper: 4).", low=1
    )
    feature_layer: str = param(
        "", "Backbone layer the head reads (e.g. conv5, layer3); empty: the final map."
    )
    head_hidden: int = param(256, "Channels of the head's 3x3 conv.", low=1)
    soft_encoding: bool = param(
        True, "Soft-encode targets over the nearest bins (paper: on); off: the nearest bin."
    )
    soft_neighbors: int = param(5, "Bins of the soft encoding (paper: 5).", low=1)
    soft_sigma: float = param(
        5.0, "Gaussian sigma of the soft encoding, in ab units (paper: 5).", low=0.0
    )
    class_rebalance: bool = param(
        True,
        "Weight pixels by the inverse (smoothed, mixed) prior of their bin (paper: on); the "
        "prior is a running count of the training targets.",
    )
    rebalance_lambda: float = probability(
        0.5, "Mix of the prior with a uniform distribution in the weights (paper: 0.5)."
    )
    decode_temperature: float = param(
        0.38, "Annealed-mean temperature of `decode` (paper: 0.38); 0 takes the mode.", low=0.0
    )


@lru_cache(maxsize=1)
def ab_bins() -> torch.Tensor:
    """(Q, 2) centres (a, b) of the in-gamut bins, in row-major (a, then b) order."""
    levels = torch.cat([torch.arange(0, 256, 4), torch.tensor([255])]).float() / 255
    grid = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij"))  # (3, n, n, n)
    lab = V.rgb_to_lab(grid.reshape(1, 3, -1, 1))[0, 1:, :, 0]  # (2, n^3)
    cells = torch.floor(lab / AB_STEP + 0.5).long() + 32  # nearest centre, ties up; >= 0
    keys = torch.unique(cells[0] * 64 + cells[1])  # one integer per (a, b) cell, sorted
    return torch.stack([keys // 64 - 32, keys % 64 - 32], dim=1).float() * AB_STEP


def encode_ab(
    ab: torch.Tensor, bins: torch.Tensor, neighbors: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ab (B, 2, h, w) -> bin indices (B, K, h, w) and weights (B, K, h, w) summing to 1.

    K = `neighbors` nearest bins weighted by exp(-d^2 / 2 sigma^2) (Zhang's soft encoding);
    K = 1 (or sigma = 0) is the hard encoding: the nearest bin with weight 1.
    """
    batch, _, height, width = ab.shape
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (P, 2)
    distances = torch.cdist(points, bins.to(points))  # (P, Q)
    neighbors = 1 if sigma == 0 else neighbors
    dist, index = distances.topk(neighbors, dim=1, largest=False)  # (P, K)
    if neighbors == 1:
        weights = torch.ones_like(dist)
    else:
        weights = torch.softmax(-(dist**2) / (2 * sigma**2), dim=1)  # normalised Gaussian
    shape = (batch, height, width, neighbors)
    return (
        index.view(shape).permute(0, 3, 1, 2).contiguous(),
        weights.view(shape).permute(0, 3, 1, 2).contiguous(),
    )


def rebalance_weights(counts: torch.Tensor, smoothing: torch.Tensor, lam: float) -> torch.Tensor:
    """Bin counts (Q,) -> per-bin weights w (Q,) with E_p~[w] = 1 (Zhang et al. eq. 4)."""
    prior = counts / counts.sum().clamp_min(1)
    smoothed = smoothing @ prior  # Gaussian smoothing over neighbouring bins (Q,)
    smoothed = smoothed / smoothed.sum().clamp_min(1e-12)
    weights = 1.0 / ((1 - lam) * smoothed + lam / len(counts))
    return weights / (smoothed * weights).sum()


def gaussian_kernel(bins: torch.Tensor, sigma: float) -> torch.Tensor:
    """(Q, Q) Gaussian of the distances between bin centres: smooths a distribution over bins."""
    return torch.exp(-(torch.cdist(bins, bins) ** 2) / (2 * sigma**2))


def lightness_input(lab: torch.Tensor) -> torch.Tensor:
    """Lab (B, 3, H, W) -> the trunk's input: L / 100 replicated to 3 channels, normalised
    (the `lightness` input record; every harmonized multi-task input is this one)."""
    return V.normalize(lightness_channels(lab), MEAN, STD)


@register_task
class Colorization(PretextTask):
    name = "colorization"
    config_class = ColorizationConfig
    # Its input is L by construction, and its targets need the colours: a multi-task run that
    # harmonises every input to this task's lightness input must leave its images alone.
    sees_color = False

    def __init__(self, config: ColorizationConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.layer = feature_layer(backbone, config.feature_layer, "colorization.feature_layer")
        bins = ab_bins()
        self.register_buffer("bins", bins, persistent=False)
        self.register_buffer("smoothing", gaussian_kernel(bins, PRIOR_SIGMA), persistent=False)
        self.register_buffer("bin_counts", torch.zeros(len(bins), dtype=torch.float64))
        self.head = DenseHead(backbone.layer_channels[self.layer], config.head_hidden, len(bins))

    def min_image_size(self) -> int:
        return max(self.config.output_stride, self.backbone.min_input_size)

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        size = cfg.input_size or images.shape[-1]
        x = V.random_resized_crop(images, size, generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        lab = V.rgb_to_lab(x)  # (B, 3, S, S)
        # Targets: the mean ab of each output_stride x output_stride block.
        ab = F.adaptive_avg_pool2d(lab[:, 1:], size // cfg.output_stride)
        neighbors = cfg.soft_neighbors if cfg.soft_encoding else 1
        bins, weights = encode_ab(ab, self.bins.to(ab.device), neighbors, cfg.soft_sigma)
        return {"lightness": lightness_input(lab), "bins": bins, "weights": weights}

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """The lightness the trunk sees beside the colours it must predict: the target's
        (soft-encoded) ab bins on that lightness."""
        lightness = display(views["lightness"][:count])  # (n, 3, H, W): L / 100 everywhere
        bins, weights = views["bins"][:count].cpu(), views["weights"][:count].float().cpu()
        ab = (self.bins.cpu()[bins] * weights[..., None]).sum(1).permute(0, 3, 1, 2)
        ab = F.interpolate(ab, size=lightness.shape[-2:], mode="nearest")  # (n, 2, H, W)
        target = V.lab_to_rgb(torch.cat([100 * lightness[:, :1], ab], 1)).clamp(0, 1)
        pairs = torch.stack([lightness, target], 1).flatten(0, 1)
        labels = ["input L", "target"] * len(lightness)
        return {"lightness_and_target": labelled_grid(pairs, labels, 8)}

    def logits(self, lightness: torch.Tensor, size: int) -> torch.Tensor:
        """Normalised L input (B, 3, H, W) -> ab-bin logits (B, Q, size, size)."""
        features = self.backbone.forward_layers(lightness, [self.layer])[self.layer]
        return self.head(features, size)

    @torch.no_grad()
    def pixel_weights(self, bins: torch.Tensor) -> torch.Tensor:
        """Nearest target bin (B, h, w) -> class-rebalancing weights (B, h, w); updates the
        running bin count first (training only)."""
        if self.training:
            # index_add_, not bincount: on a GPU bincount reads its input's max back to the
            # host to size its output, a sync every step.
            flat = bins.flatten()
            self.bin_counts.index_add_(0, flat, torch.ones_like(flat, dtype=self.bin_counts.dtype))
        weights = rebalance_weights(
            self.bin_counts.float(), self.smoothing, self.config.rebalance_lambda
        )
        return weights[bins]

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        bins, weights = views["bins"], views["weights"]  # (B, K, h, w)
        log_probs = F.log_softmax(self.logits(views["lightness"], bins.shape[-1]).float(), dim=1)
        pixel_loss = -(log_probs.gather(1, bins) * weights).sum(dim=1)  # (B, h, w)
        nearest = bins[:, 0]  # topk is sorted: the first neighbour is the nearest bin
        if self.config.class_rebalance:
            pixel_loss = pixel_loss * self.pixel_weights(nearest)
        accuracy = (log_probs.argmax(dim=1) == nearest).float().mean()
        return {"loss": pixel_loss.mean(), "pixel_accuracy": accuracy.detach()}

    @torch.no_grad()
    def decode(
        self, logits: torch.Tensor, lightness: torch.Tensor, temperature: float | None = None
    ) -> torch.Tensor:
        """Logits (B, Q, h, w) and L (B, 1, H, W) in [0, 100] -> RGB (B, 3, H, W) in [0, 1].

        ab is the annealed mean of the bin centres under softmax(logits / T) (T = 0: the
        mode), upsampled bilinearly to the resolution of L.
        """
        t = self.config.decode_temperature if temperature is None else temperature
        bins = self.bins.to(logits.device)
        if t == 0:
            ab = bins[logits.argmax(dim=1)].permute(0, 3, 1, 2)  # (B, 2, h, w)
        else:
            probs = torch.softmax(logits.float() / t, dim=1)
            ab = torch.einsum("bqhw,qc->bchw", probs, bins)
        ab = F.interpolate(ab, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
        return V.lab_to_rgb(torch.cat([lightness.float(), ab], dim=1))

    @torch.no_grad()
    def colorize(self, images: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """uint8 or [0, 1] RGB images (B, 3, H, W) -> their colours as predicted from L alone."""
        lab = V.rgb_to_lab(V.to_float(images))
        size = max(1, images.shape[-1] // self.config.output_stride)
        logits = self.logits(lightness_input(lab), size)
        return self.decode(logits, lab[:, :1], temperature)
