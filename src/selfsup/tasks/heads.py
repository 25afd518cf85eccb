"""Heads the pretext tasks share, each sized from the backbone it sits on.

- `pooled`: a feature map average-pooled to a small grid and flattened, one vector per image
  (what patch and image classification heads read; any backbone, any input size).
- `mlp`: fully connected layers with ReLUs between them.
- `DenseHead`: a feature map (any layer) -> per-pixel logits at a requested resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError


def mlp(in_features: int, hidden: list[int], out_features: int) -> nn.Sequential:
    """Linear layers in_features -> *hidden -> out_features with ReLUs between them."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def pooled(features: torch.Tensor, pool: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C * pool * pool): average-pooled to a pool x pool grid, flattened.

    Adaptive pooling makes the width independent of the input size and the backbone's stride.
    """
    return F.adaptive_avg_pool2d(features, pool).flatten(1)


def feature_layer(backbone: Backbone, name: str, key: str) -> str:
    """The layer a dense head reads: `name`, or the final map when empty; `key` names the
    config entry in the error for an unknown layer."""
    if not name:
        return backbone.layer_names[-1]
    if name not in backbone.layer_channels:
        valid = ", ".join([*backbone.layer_names, *backbone.aliases])
        raise ConfigError(f"{key}: {type(backbone).__name__} has no layer {name!r}; valid: {valid}")
    return name


class DenseHead(nn.Module):
    """Feature map (B, C, h, w) -> logits (B, out_channels, size, size).

    3x3 conv -> BN -> ReLU -> 1x1 conv at the feature map's resolution, then bilinear
    upsampling of the logits to `size` (upsampling the few output channels is far cheaper
    than upsampling the features, and is what Zhang et al. 2016 do for colorization).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, features: torch.Tensor, size: int) -> torch.Tensor:
        logits = self.layers(features)
        if logits.shape[-2:] == (size, size):
            return logits
        return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
