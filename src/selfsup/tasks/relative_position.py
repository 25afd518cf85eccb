"""Relative position (Doersch, Gupta, Efros, ICCV 2015), as used by Doersch & Zisserman 2017.

A 3x3 grid of patches, separated by gaps and each shifted by a random jitter, is laid on the
image; the network sees the centre patch and one of its 8 neighbours and must say which
neighbour it is. Both patches go through the shared backbone (one batched forward of 2B
patches), their pooled features are concatenated, and an MLP gives 8 logits:

    loss = CE(MLP([phi(centre), phi(neighbour)]), k),   k in 0..7

with neighbours numbered row-major, skipping the centre:

    0 1 2
    3 . 4
    5 6 7

Shortcut guards: the gaps and jitter stop edge and texture continuity from giving the answer;
colour dropping (two of three channels of each patch replaced by Gaussian noise) removes
chromatic aberration, which tells a patch's absolute position in the lens; optionally each
patch is standardised (per channel mean/std) so brightness gradients do not help either. In a
harmonized multi-task run (`multitask.harmonize`) the patches are cut from colorization's
lightness input and neither guard applies (`RelativePositionConfig.harmonized`).

Sizes: the paper uses 96 px patches with 48 px gaps and up to 7 px jitter, on images of
150K-450K pixels. The defaults (8 px patches, 3 px gaps, +-1 px jitter: a 32 px grid) fit 32 px
CIFAR images; for 64 px images try patch_size=16 gap=6 jitter=2 (62 px). Patches are resized
to `input_size` (at least the backbone's `min_input_size`, e.g. 39 px for alexnet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, param
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.heads import mlp, pooled
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

CENTRE = 4  # row-major index of the centre cell in the 3x3 grid
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # grid cell of each of the 8 labels
PLACES = ("NW", "N", "NE", "W", "E", "SW", "S", "SE")  # where each label's cell lies


@dataclass
class RelativePositionConfig:
    patch_size: int = param(8, "Side of each patch in image pixels (paper: 96).", low=1)
    gap: int = param(3, "Pixels between neighbouring patches before jitter (paper: 48).", low=0)
    jitter: int = param(
        1, "Each patch moves by up to +-jitter px in x and y (paper: 7); keep < gap / 2.", low=0
    )
    input_size: int = param(
        0,
        "Side patches are resized to before the backbone; 0: patch_size. Raised to the "
        "backbone's min_input_size when smaller.",
        low=0,
    )
    color_drop: bool = param(
        True, "Replace two of the three channels of each patch by noise (paper: on)."
    )
    noise_scale: float = param(
        0.01,
        "Std of the noise in dropped channels, relative to the kept channel's (paper: 1/100).",
        low=0.0,
    )
    standardize_patches: bool = param(
        False,
        "Normalise each patch to zero mean, unit std per channel, instead of the fixed ImageNet "
        "statistics (Doersch 2015's guard).",
    )
    head_pool: int = param(
        1, "Each patch's final map is average-pooled to head_pool x head_pool.", low=1
    )
    head_hidden: list[int] = param(
        [512],
        "Hidden widths of the MLP on the concatenated pair (paper: fc6 per patch 4096, "
        "fc7 4096, fc8 8).",
    )

    # In a harmonized multi-task run the patches are colorization's lightness input exactly
    # (Doersch & Zisserman: "we replace relative position's preprocessing with the same
    # preprocessing used for colorization"): no colour left to drop, no per-patch statistics.
    harmonized: ClassVar[dict[str, object]] = {"color_drop": False, "standardize_patches": False}

    def check(self, prefix: str) -> None:
        if self.jitter > 0 and 2 * self.jitter >= self.gap:
            # Patches could touch: edges continuing across the boundary give the answer away.
            raise ConfigError(
                f"{prefix}.jitter: 2 x jitter ({2 * self.jitter}) must be smaller than the gap "
                f"({self.gap}) so patches never touch"
            )


def sample_patch_pair(
    images: torch.Tensor, cfg: RelativePositionConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> centre patches (B, C, p, p), neighbour patches (B, C, p, p), labels (B,).

    One grid per image at a random position, one random neighbour per image.
    """
    batch, size = images.shape[0], images.shape[-1]
    top, left = V.grid_positions(batch, size, cfg.patch_size, cfg.gap, cfg.jitter, generator)
    labels = torch.randint(0, len(NEIGHBOURS), (batch,), generator=generator)
    cell = torch.tensor(NEIGHBOURS)[labels]  # (B,)
    rows = torch.arange(batch)
    corner_top = torch.stack([top[:, CENTRE], top[rows, cell]], dim=1)  # (B, 2)
    corner_left = torch.stack([left[:, CENTRE], left[rows, cell]], dim=1)
    pair = V.crop_at(images, corner_top, corner_left, cfg.patch_size)  # (B, 2, C, p, p)
    return pair[:, 0], pair[:, 1], V.on_device(labels, images.device)


@register_task
class RelativePosition(PretextTask):
    name = "relative-position"
    config_class = RelativePositionConfig

    def __init__(self, config: RelativePositionConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.input_size = max(config.input_size or config.patch_size, backbone.min_input_size)
        features = backbone.num_features * config.head_pool**2
        self.head = mlp(2 * features, config.head_hidden, len(NEIGHBOURS))

    def min_image_size(self) -> int:
        cfg = self.config
        return V.grid_extent(cfg.patch_size, cfg.gap, cfg.jitter)

    def prepare_patches(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 patches (N, 3, p, p) -> the backbone's normalised input (N, 3, s, s)."""
        cfg = self.config
        x = V.to_float(patches)
        if self.input_size != cfg.patch_size:
            x = V.resize(x, self.input_size, "bilinear")
        x = V.standardize(x) if cfg.standardize_patches else V.normalize(x, MEAN, STD)
        if cfg.color_drop:
            x = V.drop_color_channels(x, generator, cfg.noise_scale)
        return x

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        centre, neighbour, position = sample_patch_pair(images, self.config, generator)
        patches = self.prepare_patches(torch.cat([centre, neighbour]), generator)  # (2B, ...)
        return {"patches": patches, "position": position}

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """Each centre patch beside its neighbour, labelled with the neighbour's place in the
        3x3 grid (the label the head predicts: NW N NE W E SW S SE)."""
        centre, neighbour = views["patches"].chunk(2)
        pairs = torch.stack([centre[:count], neighbour[:count]], 1).flatten(0, 1)
        labels = []
        for label in views["position"][: len(pairs) // 2].tolist():
            labels += ["centre", f"{PLACES[label]} ({label})"]
        shown = display(pairs, standardized=self.config.standardize_patches)
        return {"patch_pairs": labelled_grid(shown, labels, 8)}

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        patches, position = views["patches"], views["position"]
        batch = position.shape[0]
        features = pooled(self.backbone(patches), self.config.head_pool)  # (2B, F)
        pair = torch.cat([features[:batch], features[batch:]], dim=1)  # (B, 2F)
        logits = self.head(pair).float()  # (B, 8)
        loss = F.cross_entropy(logits, position)
        accuracy = (logits.argmax(dim=1) == position).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}
