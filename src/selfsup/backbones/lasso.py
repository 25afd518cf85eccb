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
statistics).

No head reads the trunk past the lasso stage's last unit, so those layers never train: the
trunk's own `final` BN-ReLU keeps its initial statistics (a plain ReLU of the last unit), and
with `lasso_stage` below the last stage the later stages keep their initial weights
(`untrained_after` names them; evaluation refuses to probe them). What the heads did read is
`LassoReadout`: the trunk plus each task's combination as a layer `lasso:<task>`, built from a
checkpoint's alpha and the tasks' BN-ReLUs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.backbones.base import Backbone

READOUT_PREFIX = "lasso:"  # `lasso:<task>`: the combination task <task>'s head reads


def lasso_applies(setting: str | bool, backbone: Backbone) -> bool:
    """Whether `multitask.lasso` (`auto`, `on`, `off`; or a bool) applies to `backbone`: it
    combines residual units, which only the ResNets have (`auto`: on exactly then). ValueError
    when it is asked for on a backbone without units."""
    has_units = hasattr(backbone, "unit_names")
    if setting in ("on", True) and not has_units:
        raise ValueError(
            "the lasso combines residual units, which only selfsup's own ResNets (resnet18 to "
            "resnet101, not timm models) expose; use one of them or multitask.lasso=off"
        )
    return setting in ("on", True) or (setting == "auto" and has_units)


def untrained_after(trunk: Backbone, stage: int) -> list[str]:
    """The layers (and aliases) of `trunk` after the last unit of `stage`: a lasso run over
    that stage never runs them in training."""
    names = list(trunk.layer_names)
    after = names[names.index(trunk.unit_names(stage)[-1]) + 1 :]
    return after + [alias for alias, target in trunk.aliases.items() if target in after]


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


class LassoReadout(Backbone):
    """A lasso run's trunk with what each head read: its layers, plus `lasso:<task>` for every
    task, that task's combination BN-ReLU(sum_u alpha[t, u] unit_u) (B, C, h, w).

    Load `alphas.alpha` and each `views[t].norm` from the run (runs.load_backbone does).
    """

    def __init__(self, trunk: Backbone, tasks: Sequence[str], stage: int):
        super().__init__()
        units = trunk.unit_names(stage)
        self.trunk, self.tasks = trunk, list(tasks)
        self.alphas = LassoAlpha(len(self.tasks), len(units))
        self.views = nn.ModuleList(
            [LassoTrunk(trunk, self.alphas, row, stage) for row in range(len(self.tasks))]
        )
        readouts = [READOUT_PREFIX + task for task in self.tasks]
        self._names = [*trunk.layer_names, *readouts]
        self.aliases = dict(trunk.aliases)
        channels = trunk.layer_channels[units[-1]]
        self.layer_channels = {**trunk.layer_channels, **dict.fromkeys(readouts, channels)}
        self._probe_layers = trunk.probe_layers
        self.min_input_size = trunk.min_input_size

    @property
    def readout_layers(self) -> list[str]:
        return [READOUT_PREFIX + task for task in self.tasks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(x, [self._names[-1]])[self._names[-1]]

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(layers, str):
            raise TypeError(f"layers must be a sequence of names, not the string {layers!r}")
        unknown = [name for name in layers if name not in self.layer_channels]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; valid: {', '.join(self._names)}")
        rows = {name: self.tasks.index(name[len(READOUT_PREFIX) :]) for name in layers
                if name.startswith(READOUT_PREFIX)}  # fmt: skip
        wanted = [name for name in layers if name not in rows]
        if rows:
            wanted += self.views[0].units
        maps = self.trunk.forward_layers(x, list(dict.fromkeys(wanted)))
        return {
            name: self.views[rows[name]].combine(maps) if name in rows else maps[name]
            for name in dict.fromkeys(layers)
        }
