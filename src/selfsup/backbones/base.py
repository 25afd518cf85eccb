"""The interface every backbone implements.

A backbone is an ordered sequence of named stages run one after the other; the output of each
stage is a named feature map. `forward` runs them all and returns the last map;
`forward_layers` returns the maps a caller asks for and stops after the deepest one, so probing
conv1 costs one conv. Implementing this once here keeps the layer semantics identical across
architectures (what a linear probe reads, what a pretext head sees).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Backbone(nn.Module):
    """A trunk mapping normalised float images (B, 3, H, W) to feature maps (B, C, h, w).

    Attributes (read-only for callers):
        layer_names: the named stage outputs, in forward order; the last is the final map.
        aliases: other names for some stage outputs (e.g. ResNet `layer3` -> `layer3.22`).
        layer_channels: channels of every name `forward_layers` accepts (layers and aliases).
        num_features: channels of the final map, `layer_channels[layer_names[-1]]`.
        probe_layers: the layers a linear probe reads by default.
        min_input_size: smallest input side (px) the architecture can run on.
        vector_layers: the layers that are vectors (fully connected layers, as VGG's fc6 and
            fc7), given as (B, C, 1, 1) maps so that every layer is read the same way.

    Subclasses call `add_stage` in forward order, then may fill `aliases` via `add_alias` and
    set `_probe_layers` and `min_input_size`.
    """

    min_input_size: int = 1

    def __init__(self) -> None:
        super().__init__()
        # torch forbids "." in module names, so "layer1.0" is stored under "layer1_0";
        # `_names` keeps the public names in the same order as `stages`.
        self.stages = nn.ModuleDict()
        self._names: list[str] = []
        self.aliases: dict[str, str] = {}
        self.layer_channels: dict[str, int] = {}
        self.vector_layers: tuple[str, ...] = ()
        self._probe_layers: tuple[str, ...] = ()

    # -- construction -------------------------------------------------------------------------
    def add_stage(self, name: str, module: nn.Module, channels: int, vector: bool = False) -> None:
        """Append a stage whose output is the layer `name`, with `channels` channels;
        `vector`: a fully connected layer, whose module returns (B, channels, 1, 1)."""
        if name in self.layer_channels:
            raise ValueError(f"layer {name!r} defined twice")
        self.stages[name.replace(".", "_")] = module
        self._names.append(name)
        self.layer_channels[name] = channels
        if vector:
            self.vector_layers = (*self.vector_layers, name)

    def add_alias(self, alias: str, target: str) -> None:
        """Make `alias` another name for the existing layer `target`."""
        if alias in self.layer_channels or target not in self._names:
            raise ValueError(f"bad alias {alias!r} -> {target!r}")
        self.aliases[alias] = target
        self.layer_channels[alias] = self.layer_channels[target]

    # -- description --------------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self._names)

    @property
    def num_features(self) -> int:
        return self.layer_channels[self._names[-1]]

    @property
    def probe_layers(self) -> tuple[str, ...]:
        return self._probe_layers or self.layer_names

    @property
    def final_is_vector(self) -> bool:
        """Whether the final layer is a vector (a fully connected layer), not a spatial map."""
        return self._names[-1] in self.vector_layers

    def input_size_problem(self, side: int) -> str | None:
        """Why the trunk cannot take square inputs of `side` px, or None when it can (a task
        whose views have a side fixed by its settings checks it when it is built)."""
        if side < self.min_input_size:
            return f"{type(self).__name__} needs inputs of at least {self.min_input_size} px"
        return None

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        for side in dict.fromkeys(x.shape[-2:]):
            problem = self.input_size_problem(side)
            if problem:
                raise ValueError(f"{problem}, got {tuple(x.shape[-2:])}")

    # -- computation --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> final feature map (B, num_features, h, w)."""
        self._check_input(x)
        for stage in self.stages.values():
            x = stage(x)
        return x

    def check_layers(self, layers: Sequence[str]) -> None:
        """Refuse a bare string (it would be read as a list of characters) and unknown names."""
        if isinstance(layers, str):
            raise TypeError(f"layers must be a sequence of names, not the string {layers!r}")
        unknown = [name for name in layers if name not in self.layer_channels]
        if unknown:
            valid = [*self._names, *self.aliases]
            raise ValueError(f"unknown layer(s) {unknown}; valid: {', '.join(valid)}")

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {name: (B, layer_channels[name], h, w)} for each requested name.

        Names may be layer names or aliases; the dict has exactly the requested names as keys.
        Stages after the deepest requested layer are not run. Unknown names raise ValueError.
        """
        self.check_layers(layers)
        self._check_input(x)
        # Which requested names each stage output answers (several names may share one).
        wanted: dict[str, list[str]] = {}
        for name in dict.fromkeys(layers):
            wanted.setdefault(self.aliases.get(name, name), []).append(name)
        out: dict[str, torch.Tensor] = {}
        remaining = len(wanted)
        for name, stage in zip(self._names, self.stages.values()):
            if remaining == 0:
                break
            x = stage(x)
            if name in wanted:
                for requested in wanted[name]:
                    out[requested] = x
                remaining -= 1
        return {name: out[name] for name in dict.fromkeys(layers)}  # in the requested order

    @torch.no_grad()
    def feature_shapes(self, input_size: int) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) of every layer and alias for a square input of `input_size` px.

        Runs one zero image in eval mode (BN cannot run in training mode on a 1x1 map of one
        image) and restores the previous mode.
        """
        was_training = self.training
        param = next(self.parameters())
        x = torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype)
        try:
            self.eval()
            maps = self.forward_layers(x, [*self._names, *self.aliases])
        finally:
            self.train(was_training)
        return {name: (fmap.shape[1], fmap.shape[2], fmap.shape[3]) for name, fmap in maps.items()}

    def extra_repr(self) -> str:
        return f"layers={len(self._names)}, num_features={self.num_features}"


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU) with zero biases; norm layers scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def scaled(channels: int, width: float) -> int:
    """`channels * width` rounded to a multiple of 8 (at least 8), for tensor-core shapes."""
    return max(8, round(channels * width / 8) * 8)


def check_width(width: object) -> None:
    """A channel width multiplier: a number > 0."""
    check_kwarg(
        "width",
        width,
        isinstance(width, int | float) and not isinstance(width, bool) and width > 0,
        "a number > 0",
    )


def check_kwarg(name: str, value: object, ok: bool, expected: str) -> None:
    """Raise ValueError naming argument `name` when `ok` is false."""
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
