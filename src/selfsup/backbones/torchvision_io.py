"""Moving weights between our backbones and torchvision models, where the two truly match.

What matches, layer for layer and in function (checked by the round-trip tests):

- `alexnet_torchvision` (built without batch norm) <-> `torchvision.models.alexnet().features`.

What does not, and why:

- `alexnet` and `alexnet_small` have other conv shapes (96-256-384-384-256 with an unpadded
  11x11 conv1; 5x5 conv1) and round pooled sizes up, so no torchvision AlexNet fits them.
- Our ResNets are pre-activation (v2: BN-ReLU before each conv, a BN-ReLU after the last
  unit); torchvision's are the original post-activation ResNets (v1: conv-BN, ReLU after the
  addition). The conv shapes agree but the batch norms sit elsewhere, normalise other
  tensors and differ in number, so no renaming of parameters turns one into the other.

    vision = torchvision.models.alexnet(weights=...)       # downloaded by the user
    ours = build_backbone("alexnet_torchvision")
    load_torchvision_state(ours, vision.state_dict())    # the classifier is not a trunk part
    vision.load_state_dict(torchvision_state(ours), strict=False)  # and back
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.alexnet import ALEXNET_TORCHVISION, AlexNet
from selfsup.backbones.base import Backbone
from selfsup.backbones.resnet_v2 import ResNetV2

# Index of conv1..conv5 in torchvision's `alexnet().features` Sequential.
TORCHVISION_CONV_INDICES = (0, 3, 6, 8, 10)
CONV_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")


class TorchvisionMismatchError(ValueError):
    """The backbone has no torchvision counterpart with the same layers; says why."""


def check_matches_torchvision(backbone: Backbone) -> None:
    """Raise TorchvisionMismatchError unless `backbone` is torchvision's AlexNet trunk."""
    if isinstance(backbone, ResNetV2):
        raise TorchvisionMismatchError(
            f"resnet{backbone.depth} here is a pre-activation ResNet (v2: BN-ReLU before each "
            "conv and after the last unit); torchvision's resnets are post-activation (v1: "
            "conv-BN, ReLU after the addition). Their conv shapes agree but the batch norms do "
            "not correspond, so the weights cannot be moved between them; train from scratch "
            "or use alexnet_torchvision"
        )
    if not isinstance(backbone, AlexNet):
        raise TorchvisionMismatchError(
            f"{type(backbone).__name__} has no torchvision counterpart; only "
            "alexnet_torchvision (without batch norm) matches torchvision's alexnet"
        )
    convs = [_stage_conv(backbone, stage) for stage in CONV_STAGES]
    spec = tuple((c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs)
    pools = [m for m in backbone.modules() if isinstance(m, nn.MaxPool2d)]
    floor_pools = all(not p.ceil_mode and p.kernel_size == 3 and p.stride == 2 for p in pools)
    if spec != ALEXNET_TORCHVISION or not floor_pools:
        raise TorchvisionMismatchError(
            f"this AlexNet's convs {spec} or pooling differ from torchvision's "
            f"{ALEXNET_TORCHVISION} with floor-mode 3x3/2 pooling: use alexnet_torchvision"
        )
    if backbone.batch_norm:
        raise TorchvisionMismatchError(
            "this AlexNet has batch norm, torchvision's has none: build alexnet_torchvision "
            "with batch_norm=False (config: backbone.batch_norm=false)"
        )


def _stage_conv(backbone: Backbone, stage: str) -> nn.Conv2d:
    return next(m for m in backbone.stages[stage].modules() if isinstance(m, nn.Conv2d))


def _name_pairs(backbone: Backbone) -> list[tuple[str, str]]:
    """(our state-dict name, torchvision's) for every trunk parameter."""
    pairs = []
    for stage, index in zip(CONV_STAGES, TORCHVISION_CONV_INDICES):
        conv_name = next(
            name for name, m in backbone.stages[stage].named_modules() if isinstance(m, nn.Conv2d)
        )
        for kind in ("weight", "bias"):
            pairs.append((f"stages.{stage}.{conv_name}.{kind}", f"features.{index}.{kind}"))
    return pairs


def torchvision_state(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The trunk's weights under torchvision's names (`features.*`; no classifier).

    Load into `torchvision.models.alexnet()` with `strict=False` (its classifier keeps its own
    weights: a pretext task has no ImageNet classifier to give it).
    """
    check_matches_torchvision(backbone)
    state = backbone.state_dict()
    return {theirs: state[ours].detach().clone() for ours, theirs in _name_pairs(backbone)}


def load_torchvision_state(backbone: Backbone, state: dict[str, torch.Tensor]) -> None:
    """Copy a torchvision AlexNet state dict's trunk (`features.*`) into `backbone`.

    `classifier.*` entries are ignored; missing or misshapen trunk entries raise
    TorchvisionMismatchError naming them.
    """
    check_matches_torchvision(backbone)
    pairs = _name_pairs(backbone)
    missing = [theirs for _, theirs in pairs if theirs not in state]
    if missing:
        raise TorchvisionMismatchError(
            f"the state dict lacks {', '.join(missing)}; is it a torchvision alexnet?"
        )
    ours_state = backbone.state_dict()
    wrong = [
        f"{theirs} {tuple(state[theirs].shape)} vs {tuple(ours_state[ours].shape)}"
        for ours, theirs in pairs
        if state[theirs].shape != ours_state[ours].shape
    ]
    if wrong:
        raise TorchvisionMismatchError(f"shapes differ: {'; '.join(wrong)}")
    backbone.load_state_dict({ours: state[theirs] for ours, theirs in pairs})
