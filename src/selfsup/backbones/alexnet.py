"""AlexNet trunks: the counting paper's (114 px tiles) and a small one for 8-64 px images.

Named layers are the post-ReLU outputs of conv1..conv5 (what the papers' linear probes read)
and `pool5`, the final map. The max pooling after conv1, conv2 sits at the start of the next
stage, so each conv layer name is the activation itself rather than its pooled version. Pooling
uses `ceil_mode` as in the Caffe original, so a 114 px input gives the 3x3 pool5 map of
Noroozi et al. 2017 ("Representation Learning by Learning to Count") and 224 px gives 6x6.

`alexnet_torchvision` has exactly the layer shapes of torchvision's `alexnet` trunk (its
`features`: 64-192-384-256-256, conv1 11x11/4 padded by 2, floor-mode 3x3/2 pooling, no batch
norm), so torchvision weights load into it (see `torchvision_io`); the other two do not match.
"""

from __future__ import annotations

from torch import nn

from selfsup.backbones.base import Backbone, check_kwarg, init_weights
from selfsup.backbones.conv import LayoutConv2d

# (out_channels, kernel, stride, padding) of conv1..conv5.
ConvSpec = tuple[tuple[int, int, int, int], ...]

# Counting paper (Noroozi et al. 2017), for 114 px tiles; conv2 without the original groups.
ALEXNET: ConvSpec = ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1))
# Same five-conv design for 8-64 px inputs: stride-1 conv1 and 2x2 pooling keep enough
# resolution that a 16 px tile still has a 2x2 pool5 map.
ALEXNET_SMALL: ConvSpec = (
    (64, 5, 1, 2),
    (192, 5, 1, 2),
    (384, 3, 1, 1),
    (256, 3, 1, 1),
    (256, 3, 1, 1),
)
# torchvision.models.alexnet's `features` (the one-GPU variant of Krizhevsky's "one weird trick").
ALEXNET_TORCHVISION: ConvSpec = (
    (64, 11, 4, 2),
    (192, 5, 1, 2),
    (384, 3, 1, 1),
    (256, 3, 1, 1),
    (256, 3, 1, 1),
)


def conv_stage(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int,
    padding: int,
    batch_norm: bool,
    pool: nn.Module | None,
) -> nn.Sequential:
    """[pool] -> conv -> [BN] -> ReLU: (B, in_ch, H, W) -> (B, out_ch, h, w)."""
    layers: list[nn.Module] = [] if pool is None else [pool]
    # With BN the conv bias is redundant (BN's shift replaces it).
    layers.append(LayoutConv2d(in_ch, out_ch, kernel, stride, padding, bias=not batch_norm))
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class AlexNet(Backbone):
    """Five conv layers with max pooling after conv1, conv2 and conv5.

    Layers: conv1..conv5 (post-ReLU), pool5 (final, `spec[-1][0]` channels).

    Args:
        spec: (out_channels, kernel, stride, padding) for conv1..conv5.
        pool: max-pool (kernel, stride).
        batch_norm: BN after each conv, before the ReLU.
        min_input_size: smallest input side (px) this spec supports.
        ceil_mode: round pooled sizes up (Caffe) rather than down (torchvision).
    """

    def __init__(
        self,
        spec: ConvSpec,
        pool: tuple[int, int],
        batch_norm: bool = True,
        min_input_size: int = 1,
        ceil_mode: bool = True,
    ) -> None:
        super().__init__()
        check_kwarg("batch_norm", batch_norm, isinstance(batch_norm, bool), "a bool")
        if len(spec) != 5:
            raise ValueError(f"spec: expected 5 conv layers, got {len(spec)}")
        self.batch_norm = batch_norm
        self.min_input_size = min_input_size
        in_ch = 3
        for index, (out_ch, kernel, stride, padding) in enumerate(spec, start=1):
            pooled = nn.MaxPool2d(*pool, ceil_mode=ceil_mode) if index in (2, 3) else None
            stage = conv_stage(in_ch, out_ch, kernel, stride, padding, batch_norm, pooled)
            self.add_stage(f"conv{index}", stage, out_ch)
            in_ch = out_ch
        self.add_stage("pool5", nn.MaxPool2d(*pool, ceil_mode=ceil_mode), in_ch)
        # The papers probe the conv activations; pool5 is conv5 pooled, so it adds little.
        self._probe_layers = ("conv1", "conv2", "conv3", "conv4", "conv5")
        init_weights(self)


def alexnet(batch_norm: bool = True) -> AlexNet:
    """The counting paper's AlexNet (96-256-384-384-256, conv1 11x11/4, 3x3/2 pooling).

    (B, 3, 114, 114) -> pool5 (B, 256, 3, 3); 224 px -> (B, 256, 6, 6). Inputs >= 39 px.
    """
    return AlexNet(ALEXNET, pool=(3, 2), batch_norm=batch_norm, min_input_size=39)


def alexnet_small(batch_norm: bool = True) -> AlexNet:
    """AlexNet for 8-64 px inputs (64-192-384-256-256, conv1 5x5/1, 2x2/2 pooling).

    (B, 3, 16, 16) -> pool5 (B, 256, 2, 2); 32 px -> (B, 256, 4, 4). Inputs >= 1 px.
    """
    return AlexNet(ALEXNET_SMALL, pool=(2, 2), batch_norm=batch_norm, min_input_size=1)


def alexnet_torchvision(batch_norm: bool = False) -> AlexNet:
    """torchvision's AlexNet trunk (64-192-384-256-256, conv1 11x11/4, floor 3x3/2 pooling).

    (B, 3, 224, 224) -> pool5 (B, 256, 6, 6). Inputs >= 63 px. Only without batch norm (the
    default here) does it hold torchvision weights.
    """
    return AlexNet(
        ALEXNET_TORCHVISION, pool=(3, 2), batch_norm=batch_norm, min_input_size=63, ceil_mode=False
    )
