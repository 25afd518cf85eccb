"""Lasso layer combination (Doersch & Zisserman 2017, §4.2).

In multi-task training each task's head reads, instead of the trunk's last unit, a learned
linear combination of the outputs of all residual units of one stage:

    features_t = BN-ReLU_t( sum_u alpha[t, u] * unit_u(x) )

with an L1 penalty lambda * |alpha|_1 that makes each row of alpha sparse, so a task draws on
the few depths that serve it. The learned alpha (tasks x units) shows which layers each task
uses. All units of a stage have the same output shape (the first one downsamples inside), so
the sum is well defined.

`LassoTrunk` is one task's view of the shared trunk: it is a `Backbone` whose final layer is
the task's combination, so a task's code is the same with or without the lasso. Every other
layer is the shared trunk's own. BN-ReLU is per task (each combination has its own
statistics); the trunk's own `final` BN-ReLU is not trained in lasso runs (its running
statistics stay at their initial values, so in evaluation it is a plain ReLU of the last
unit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.backbones.base import Backbone


class LassoAlpha(nn.Module):
    """The (tasks x units) combination weights shared by the task views."""

    def __init__(self, tasks: int, units: int):
        super().__init__()
        # Uniform start: every depth has the same say until the penalty and the tasks decide.
        self.alpha = nn.Parameter(torch.full((tasks, units), 1.0 / units))

    def l1(self) -> torch.Tensor:
        return self.alpha.abs().sum()


class LassoTrunk(Backbone):
    """Task `row`'s view of `trunk`: layers as the trunk's, final = its unit combination."""

    def __init__(self, trunk: Backbone, alphas: LassoAlpha, row: int, stage: int):
        super().__init__()
        if not hasattr(trunk, "unit_names"):
            raise ValueError(
                f"the lasso combines residual units; {type(trunk).__name__} has none (use a "
                "ResNet backbone)"
            )
        self.trunk, self.alphas, self.row = trunk, alphas, row
        self.units = trunk.unit_names(stage)
        channels = trunk.layer_channels[self.units[-1]]
        self.norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self._names = list(trunk.layer_names)
        self.aliases = dict(trunk.aliases)
        self.layer_channels = {**trunk.layer_channels, self._names[-1]: channels}
        self._probe_layers = trunk.probe_layers
        self.min_input_size = trunk.min_input_size

    def combine(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.alphas.alpha[self.row]
        mixed = sum(weights[i] * maps[unit] for i, unit in enumerate(self.units))
        return self.norm(mixed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.trunk.forward_layers(x, self.units))

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(layers, str):
            raise TypeError(f"layers must be a sequence of names, not the string {layers!r}")
        final = self._names[-1]
        others = [name for name in layers if name != final]
        wanted = others + list(self.units) if final in layers else others
        maps = self.trunk.forward_layers(x, list(dict.fromkeys(wanted)))
        return {
            name: self.combine(maps) if name == final else maps[name]
            for name in dict.fromkeys(layers)
        }
