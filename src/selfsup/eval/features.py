"""Frozen features of every named layer, pooled to a few thousand dimensions.

The papers' linear-probe protocol reads each layer's feature map average-pooled to a small grid
so that every layer gives a comparable number of dimensions (a few thousand). Here the grid of
a layer is the largest g with channels * g * g <= `max_dims` (and g no larger than the map).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from selfsup.backbones import Backbone
from selfsup.data import views as V
from selfsup.runtime import autocast
from selfsup.tasks.base import MEAN, STD


def pooled_grid(channels: int, height: int, max_dims: int) -> int:
    """Largest g <= height with channels * g^2 <= max_dims (at least 1)."""
    return max(1, min(height, math.isqrt(max(1, max_dims // channels))))


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    images: torch.Tensor,
    layers: list[str],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    max_dims: int = 4096,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "features",
) -> dict[str, torch.Tensor]:
    """(N, 3, S, S) uint8 -> {layer: (N, D) float16} pooled, flattened features.

    One forward per batch serves every layer. Stored as float16 to halve memory; the probes
    standardise them in float32.
    """
    backbone.eval().to(device)
    shapes = backbone.feature_shapes(images.shape[-1])
    grids = {layer: pooled_grid(shapes[layer][0], shapes[layer][1], max_dims) for layer in layers}
    out = {
        layer: torch.empty(len(images), shapes[layer][0] * grids[layer] ** 2, dtype=torch.float16)
        for layer in layers
    }
    for start in tqdm(
        range(0, len(images), batch_size),
        desc=desc,
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        batch = images[start : start + batch_size].to(device)
        x = V.normalize(V.to_float(batch), MEAN, STD).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            maps = backbone.forward_layers(x, layers)
        for layer, fmap in maps.items():
            pooled = F.adaptive_avg_pool2d(fmap.float(), grids[layer])  # (B, C, g, g)
            out[layer][start : start + len(batch)] = pooled.flatten(1).to(torch.float16).cpu()
    return out
