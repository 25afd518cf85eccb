"""A light FPN-style decoder reading a few backbone layers, and which layers it reads.

Each chosen layer gets a 1x1 lateral conv to a common width; going from the coarsest map to
the finest, the running map is upsampled and added to the next lateral (Lin et al. 2017's
top-down path), then two 3x3 convs and a 1x1 prediction at the finest map's resolution are
upsampled bilinearly to the output size. It is deliberately small (a few hundred thousand
parameters at width 64) so the score reflects the features, not the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError


def pick_layers(backbone: Backbone, size: int, count: int) -> list[str]:
    """The deepest layer at each of the `count` coarsest resolutions the backbone's probe
    layers and final map reach, finest first (e.g. ResNet layer2, layer3, final)."""
    names = list(dict.fromkeys([*backbone.probe_layers, backbone.layer_names[-1]]))
    shapes = backbone.feature_shapes(size)
    deepest_per_resolution: dict[int, str] = {}
    for name in names:  # forward order: a later name at the same resolution replaces an earlier
        deepest_per_resolution[shapes[name][1]] = name
    by_resolution = sorted(deepest_per_resolution.items(), reverse=True)  # finest first
    return [name for _, name in by_resolution[-count:]]


def check_layers(backbone: Backbone, layers: list[str]) -> None:
    unknown = [name for name in layers if name not in backbone.layer_channels]
    if unknown:
        valid = ", ".join([*backbone.layer_names, *backbone.aliases])
        raise ConfigError(f"--layers: unknown layer(s) {unknown}; valid: {valid}")


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class FpnDecoder(nn.Module):
    """{layer: (B, C_l, h_l, w_l)} finest first -> (B, out_channels, H, W) at `size`."""

    def __init__(self, in_channels: list[int], out_channels: int, width: int = 64):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.refine = nn.Sequential(conv_bn_relu(width, width), conv_bn_relu(width, width))
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.laterals[-1](features[-1])
        for lateral, fmap in zip(reversed(self.laterals[:-1]), reversed(features[:-1])):
            x = lateral(fmap) + F.interpolate(
                x, size=fmap.shape[-2:], mode="bilinear", align_corners=False
            )
        out = self.predict(self.refine(x))  # (B, out_channels, h_finest, w_finest)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class DenseModel(nn.Module):
    """Backbone + decoder: normalised images (B, 3, H, W) -> (B, out_channels, H, W)."""

    def __init__(self, backbone: Backbone, layers: list[str], out_channels: int, width: int = 64):
        super().__init__()
        check_layers(backbone, layers)
        self.backbone, self.layers = backbone, layers
        channels = [backbone.layer_channels[name] for name in layers]
        self.decoder = FpnDecoder(channels, out_channels, width)

    def forward(self, x: torch.Tensor, frozen: bool) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            maps = self.backbone.forward_layers(x, self.layers)
        features = [maps[name].float() for name in self.layers]
        return self.decoder(features, tuple(x.shape[-2:]))
