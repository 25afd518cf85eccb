"""Pre-activation ResNet (ResNet v2; He et al. 2016, "Identity Mappings in Deep Residual
Networks"), the trunk of the multi-task paper (Doersch & Zisserman 2017).

Every residual unit computes y = shortcut + F(BN-ReLU(x)) with nothing after the addition, so
a unit whose residual branch outputs zero is exactly the identity. Each unit's output is a
named layer `layer{s}.{u}` so a multi-task "lasso" can read any unit; `layer{s}` is an alias
for the last unit of stage s, and `final` is the BN-ReLU that v2 needs after the last unit
(units end without an activation, so the raw sum is not a good feature).
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.base import Backbone, check_kwarg, check_width, init_weights, scaled
from selfsup.backbones.conv import LayoutConv2d

# Residual units per stage.
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
STEMS = ("imagenet", "small")


class PreActUnit(nn.Module):
    """Shared pre-activation and shortcut; subclasses build `residual`.

    (B, in_ch, H, W) -> (B, planes * expansion, H / stride, W / stride).
    """

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.pre = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True))
        # v2: the projection reads the pre-activated input, so both paths see normalised
        # features; the identity shortcut keeps the raw input (the clean signal path).
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = LayoutConv2d(in_ch, out_ch, 1, stride, bias=False)
        self.residual = self.make_residual(in_ch, planes, stride)

    def make_residual(self, in_ch: int, planes: int, stride: int) -> nn.Sequential:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        return shortcut + self.residual(pre)


class PreActBasic(PreActUnit):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def make_residual(self, in_ch: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            LayoutConv2d(in_ch, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            LayoutConv2d(planes, planes, 3, 1, 1, bias=False),
        )


class PreActBottleneck(PreActUnit):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4 (ResNet-50/101)."""

    expansion = 4

    def make_residual(self, in_ch: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            LayoutConv2d(in_ch, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            LayoutConv2d(planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            LayoutConv2d(planes, planes * self.expansion, 1, bias=False),
        )


class ResNetV2(Backbone):
    """Pre-activation ResNet trunk.

    Layers: `stem`, every unit `layer{s}.{u}` (s = 1..num_stages), `final` (BN-ReLU of the
    last unit; the output, (B, num_features, h, w)). Aliases: `layer{s}` -> its last unit.
    With the imagenet stem the final map is 1/32 of the input at 4 stages (224 -> 7x7); with
    the small stem, 1/8 (32 -> 4x4).

    Args:
        depth: 18, 34 (basic units) or 50, 101 (bottleneck units).
        width: channel multiplier for 64/128/256/512 (rounded to a multiple of 8, >= 8).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max pool) or "small" (3x3/1 conv, 32-64 px).
        num_stages: stages kept, 1-4 (the multi-task paper cuts ResNet-101 after stage 3).
    """

    def __init__(
        self, depth: int, width: float = 1.0, stem: str = "imagenet", num_stages: int = 4
    ) -> None:
        super().__init__()
        check_kwarg("depth", depth, depth in DEPTHS, f"one of {sorted(DEPTHS)}")
        check_width(width)
        check_kwarg("stem", stem, stem in STEMS, f"one of {STEMS}")
        check_kwarg(
            "num_stages",
            num_stages,
            isinstance(num_stages, int)
            and not isinstance(num_stages, bool)
            and 1 <= num_stages <= 4,
            "1, 2, 3 or 4",
        )
        self.depth, self.width, self.stem, self.num_stages = depth, float(width), stem, num_stages
        unit = PreActBasic if depth < 50 else PreActBottleneck

        stem_ch = scaled(64, width)
        # No BN-ReLU in the stem: the first unit's pre-activation supplies it (as in TF-slim's
        # resnet_v2, which the multi-task paper used).
        if stem == "imagenet":
            stem_module: nn.Module = nn.Sequential(
                LayoutConv2d(3, stem_ch, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1)
            )
        else:
            stem_module = LayoutConv2d(3, stem_ch, 3, 1, 1, bias=False)
        self.add_stage("stem", stem_module, stem_ch)

        in_ch = stem_ch
        self._units: dict[int, tuple[str, ...]] = {}
        for s in range(1, num_stages + 1):
            planes = scaled(64 * 2 ** (s - 1), width)
            names = []
            for u in range(DEPTHS[depth][s - 1]):
                stride = 2 if s > 1 and u == 0 else 1  # downsample at the start of stages 2-4
                names.append(f"layer{s}.{u}")
                self.add_stage(names[-1], unit(in_ch, planes, stride), planes * unit.expansion)
                in_ch = planes * unit.expansion
            self._units[s] = tuple(names)
            self.add_alias(f"layer{s}", names[-1])
        self.add_stage("final", nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)), in_ch)
        # Default probe: the stem, each stage but the last, and the activated final map (the
        # last stage's raw sum is the same map without BN-ReLU).
        self._probe_layers = ("stem", *[f"layer{s}" for s in range(1, num_stages)], "final")
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """("stem", "layer1", ..., "layer{num_stages}", "final"); all accepted by forward_layers."""
        return ("stem", *[f"layer{s}" for s in range(1, self.num_stages + 1)], "final")

    def unit_names(self, stage: int) -> tuple[str, ...]:
        """Names of the residual units of `stage` (1-based), in forward order."""
        if stage not in self._units:
            raise ValueError(f"stage {stage} is not in 1..{self.num_stages}")
        return self._units[stage]

    def unit(self, name: str) -> PreActUnit:
        """The residual unit module called `name` (e.g. "layer3.22")."""
        if name not in self._names or not name.startswith("layer"):
            raise ValueError(f"{name!r} is not a residual unit of this network")
        return self.stages[name.replace(".", "_")]  # type: ignore[return-value]


def resnet18(width: float = 1.0, stem: str = "imagenet", num_stages: int = 4) -> ResNetV2:
    """Pre-activation ResNet-18 (basic units, 2-2-2-2; 512 * width final channels)."""
    return ResNetV2(18, width, stem, num_stages)


def resnet34(width: float = 1.0, stem: str = "imagenet", num_stages: int = 4) -> ResNetV2:
    """Pre-activation ResNet-34 (basic units, 3-4-6-3; 512 * width final channels)."""
    return ResNetV2(34, width, stem, num_stages)


def resnet50(width: float = 1.0, stem: str = "imagenet", num_stages: int = 4) -> ResNetV2:
    """Pre-activation ResNet-50 (bottleneck units, 3-4-6-3; 2048 * width final channels)."""
    return ResNetV2(50, width, stem, num_stages)


def resnet101(width: float = 1.0, stem: str = "imagenet", num_stages: int = 4) -> ResNetV2:
    """Pre-activation ResNet-101 (bottleneck units, 3-4-23-3; 2048 * width final channels;
    num_stages=3 gives the multi-task paper's trunk: 1024 channels, 23 units in stage 3)."""
    return ResNetV2(101, width, stem, num_stages)
