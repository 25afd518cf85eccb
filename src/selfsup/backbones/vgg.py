"""VGG16 (Simonyan & Zisserman 2015), the trunk of transitive invariance: Wang, He & Gupta
(2017) train "a Triplet-Siamese network with VGG16 as the base architecture".

Named layers: conv1..conv5, the outputs of the five blocks of 3x3 convolutions (post-ReLU; the
2x2 max pooling after a block sits at the start of the next stage, as in `alexnet`, so each
name is the activation itself), pool5, and the fully connected fc6 and fc7 (4096 wide,
post-ReLU and dropout, given as (B, 4096, 1, 1) maps). fc7 is the final layer: the paper's
embedding reads it. Probe points: conv1..conv5, fc6, fc7.

fc6 reads pool5 average-pooled to 7x7 (as torchvision's VGG does), which is pool5 itself at
224 px and at the paper's 227 px (227 -> 113 -> 56 -> 28 -> 14 -> 7), so any input of at
least 32 px runs. `width` scales every channel count and the fc widths, for small inputs and
tests; batch norm after every convolution (`batch_norm`) lets the 16 layers train from
scratch without the original's stage-wise initialisation.
"""

from __future__ import annotations

from torch import nn

from selfsup.backbones.base import Backbone, check_kwarg, check_width, init_weights, scaled
from selfsup.backbones.conv import LayoutConv2d

# (channels, convolutions) of the five blocks; every convolution 3x3, stride 1, padding 1.
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096
FC_GRID = 7  # pool5 is average-pooled to 7x7 before fc6


def conv_block(
    in_ch: int, out_ch: int, convs: int, batch_norm: bool, pooled: bool
) -> nn.Sequential:
    """[2x2 max pool] -> `convs` x (3x3 conv -> [BN] -> ReLU): (B, in_ch, H, W) ->
    (B, out_ch, H', W'), H' = H / 2 after a pool, else H."""
    layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if pooled else []
    for index in range(convs):
        # With BN the conv bias is redundant (BN's shift replaces it).
        conv = LayoutConv2d(in_ch if index == 0 else out_ch, out_ch, 3, 1, 1, bias=not batch_norm)
        layers += [conv, *([nn.BatchNorm2d(out_ch)] if batch_norm else []), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def fully_connected(
    in_features: int, out_features: int, dropout: float, grid: int | None = None
) -> nn.Sequential:
    """[average pool to grid x grid] -> flatten -> linear -> ReLU -> dropout:
    (B, C, h, w) -> (B, out_features, 1, 1)."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(grid)] if grid else []
    layers += [
        nn.Flatten(),
        nn.Linear(in_features, out_features),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Unflatten(1, (out_features, 1, 1)),
    ]
    return nn.Sequential(*layers)


class VGG(Backbone):
    """Blocks of 3x3 convolutions with 2x2 max pooling between them, then fc6 and fc7.

    Layers: conv1..conv5 (post-ReLU), pool5, fc6, fc7 (final, (B, fc_width, 1, 1)).

    Args:
        blocks: (channels, convolutions) of each block, before `width`.
        width: multiplier of every channel count and of the fc widths (rounded to a multiple
            of 8, at least 8).
        batch_norm: BN after each convolution, before the ReLU.
        dropout: dropout after the ReLU of fc6 and fc7 (VGG's 0.5).
    """

    min_input_size = 32  # five 2x2 poolings leave a 1x1 pool5

    def __init__(
        self,
        blocks: tuple[tuple[int, int], ...],
        width: float = 1.0,
        batch_norm: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_width(width)
        check_kwarg("batch_norm", batch_norm, isinstance(batch_norm, bool), "a bool")
        check_kwarg("dropout", dropout, 0 <= dropout < 1, "a probability in [0, 1)")
        self.width, self.batch_norm = float(width), batch_norm
        in_ch = 3
        for index, (channels, convs) in enumerate(blocks, start=1):
            out_ch = scaled(channels, width)
            self.add_stage(
                f"conv{index}", conv_block(in_ch, out_ch, convs, batch_norm, index > 1), out_ch
            )
            in_ch = out_ch
        self.add_stage(f"pool{len(blocks)}", nn.MaxPool2d(2, 2), in_ch)
        fc = scaled(FC_WIDTH, width)
        self.add_stage(
            "fc6", fully_connected(in_ch * FC_GRID**2, fc, dropout, FC_GRID), fc, vector=True
        )
        self.add_stage("fc7", fully_connected(fc, fc, dropout), fc, vector=True)
        # pool5 is conv5 pooled, so it adds little to a probe.
        self._probe_layers = (*[f"conv{i}" for i in range(1, len(blocks) + 1)], "fc6", "fc7")
        init_weights(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # as VGG and torchvision: small fc weights
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)


def vgg16(width: float = 1.0, batch_norm: bool = True, dropout: float = 0.5) -> VGG:
    """VGG16: 13 convolutions in blocks of 64-128-256-512-512 channels (2-2-3-3-3), fc6 and
    fc7 of 4096 (all times `width`).

    (B, 3, 227, 227) -> fc7 (B, 4096, 1, 1), conv5 (B, 512, 14, 14). Inputs >= 32 px.
    """
    return VGG(VGG16_BLOCKS, width=width, batch_norm=batch_norm, dropout=dropout)
