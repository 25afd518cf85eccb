"""Any timm model as a backbone: `backbone.name=timm:<model>` (`timm:resnet50`,
`timm:convnext_tiny`, `timm:vit_small_patch16_224`, ...).

The layers are the model's feature stages as timm's feature-extraction API lists them
(`model.feature_info`: `act1`, `layer1`..`layer4` for a ResNet, `stages.0`..`stages.3` for a
ConvNeXt, `blocks.0`..`blocks.11` for a ViT), plus the alias `final` for the last; every one is a
(B, C, h, w) map, ViT tokens included (timm drops the class token and lays the patches out on
their grid). `forward_layers` is timm's `forward_intermediates(stop_early=True)`, so the stages
after the deepest requested layer are not run.

Why `forward_intermediates` on the whole model rather than `features_only=True`: the feature
wrappers rename modules (ConvNeXt's `stages.0` becomes `stages_0`; a ViT moves under `model.`),
while the model itself keeps timm's parameter names. So the state dict here is exactly the timm
model's, less its classifier head (and a ViT's final norm, which no layer reads): an exported
backbone loads into `timm.create_model(<model>)` by name, and a state dict saved from that model
loads here (`train.init_backbone`). Weights are never downloaded (`pretrained=False`).

ViTs are built with `dynamic_img_size=True`, so they take any input whose sides are multiples
of the patch size (the position embeddings are interpolated to the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from selfsup.backbones.base import Backbone
from selfsup.config import ConfigError

PREFIX = "timm:"  # backbone.name=timm:<model>
INSTALL = "pip install 'selfsup[timm]'"


class TimmUnavailableError(ConfigError):
    """timm is not installed, or does not know the model."""


def import_timm() -> Any:
    """The timm package, or a one-line error naming the extra that installs it."""
    try:
        import timm
    except ImportError as err:
        raise TimmUnavailableError(f"timm backbones need the timm package: {INSTALL}") from err
    return timm


def create_timm_model(model: str) -> torch.nn.Module:
    """timm's `model` with fresh weights, without classifier head; ViT-style models with
    dynamic image sizes. Unknown names raise TimmUnavailableError saying how to find one."""
    timm = import_timm()
    if not model or not timm.is_model(model):
        close = timm.list_models(f"*{model}*")[:8] if model else []
        raise TimmUnavailableError(
            f"backbone.name: timm has no model {model!r}"
            + (f" (close: {', '.join(close)})" if close else "")
            + "; list names with python -c \"import timm; print(timm.list_models('resnet*'))\""
        )
    try:
        return timm.create_model(model, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError:  # a model without dynamic image sizes (every convolutional one)
        return timm.create_model(model, pretrained=False, num_classes=0)


class TimmBackbone(Backbone):
    """A timm model's feature stages as named layers (see the module docstring)."""

    def __init__(self, model: str):
        super().__init__()
        net = create_timm_model(model)
        if not hasattr(net, "forward_intermediates") or not getattr(net, "feature_info", None):
            raise TimmUnavailableError(
                f"backbone.name: timm model {model!r} has no feature-extraction API "
                "(forward_intermediates); choose another model"
            )
        self.model_name = model
        info = net.feature_info
        # Drop what no layer reads (the head, a ViT's final norm): no unused parameters.
        net.prune_intermediate_layers(list(range(len(info))), prune_norm=True, prune_head=True)
        self.net = net
        for entry in info:
            self._names.append(entry["module"])
            self.layer_channels[entry["module"]] = entry["num_chs"]
        self.add_alias("final", self._names[-1])
        patch = getattr(getattr(net, "patch_embed", None), "patch_size", None)
        self.patch_size = int(patch[0]) if patch is not None else 0  # a ViT's sides: multiples
        self.min_input_size = self.patch_size or smallest_input(net, len(info))
        # The state dict carries timm's own names: `conv1.weight`, not `net.conv1.weight`.
        self.register_state_dict_post_hook(_strip_net_prefix)
        self.register_load_state_dict_pre_hook(_add_net_prefix)

    def input_size_problem(self, side: int) -> str | None:
        if side < self.min_input_size:
            return f"timm:{self.model_name} needs inputs of at least {self.min_input_size} px"
        if self.patch_size and side % self.patch_size:
            return (
                f"timm:{self.model_name} takes sides that are multiples of its "
                f"{self.patch_size} px patch"
            )
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last feature stage (B, num_features, h, w)."""
        return self.forward_layers(x, [self._names[-1]])[self._names[-1]]

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """As `Backbone.forward_layers`, through timm's `forward_intermediates`."""
        self.check_layers(layers)
        self._check_input(x)
        stages = [self._names.index(self.aliases.get(name, name)) for name in layers]
        wanted = sorted(set(stages))
        maps = self.net.forward_intermediates(
            x, indices=wanted, stop_early=True, intermediates_only=True, output_fmt="NCHW"
        )
        by_stage = dict(zip(wanted, maps))
        return {name: by_stage[stage] for name, stage in zip(layers, stages)}

    def load_timm_weights(self, path: str) -> None:
        """Weights saved from the timm model itself (`torch.save(model.state_dict(), path)`,
        a .safetensors, or a timm training checkpoint with `state_dict`): every parameter and
        buffer of this backbone must be there; what it does not hold (the classifier head, a
        ViT's final norm) is left out. ValueError names what is missing or misshapen."""
        timm = import_timm()
        try:
            state = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
        except Exception as err:  # torch, safetensors and pickle raise their own types
            raise ValueError(f"{path}: not a readable state dict ({err})") from err
        own = self.state_dict()
        missing = [key for key in own if key not in state]
        misshapen = [
            key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)
        ]
        if missing or misshapen:
            raise ValueError(
                f"{path}: not weights of timm:{self.model_name}"
                + (f"; missing {len(missing)} keys, e.g. {missing[0]}" if missing else "")
                + (f"; other shapes for {misshapen[:3]}" if misshapen else "")
            )
        self.load_state_dict({key: state[key] for key in own})

    def extra_repr(self) -> str:
        return f"timm:{self.model_name}, {super().extra_repr()}"


@torch.no_grad()
def smallest_input(net: torch.nn.Module, stages: int) -> int:
    """The smallest power-of-two side (px) on which a convolutional `net` runs all `stages`,
    tried on one zero image: unpadded stride-2 convolutions, as ConvNeXt's, need 32 px;
    padded ones, as a ResNet's, run on anything."""
    was_training = net.training
    net.eval()
    try:
        for power in range(11):
            try:
                zeros = torch.zeros(1, 3, 2**power, 2**power)
                net.forward_intermediates(zeros, indices=[stages - 1], intermediates_only=True)
            except RuntimeError:  # a kernel larger than its input
                continue
            return 2**power
    finally:
        net.train(was_training)
    raise TimmUnavailableError("a timm model that runs on no input up to 1024 px")


def _strip_net_prefix(module, state_dict, prefix, local_metadata) -> None:
    inner = prefix + "net."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _add_net_prefix(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if not key.startswith(prefix + "net."):
            state_dict[prefix + "net." + key[len(prefix) :]] = state_dict.pop(key)


def timm_backbone(model: str) -> TimmBackbone:
    """The factory of `timm:<model>` (timm's own settings: none of selfsup's apply)."""
    return TimmBackbone(model)
