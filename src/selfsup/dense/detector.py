"""torchvision's Faster R-CNN with an FPN, on one of our backbones.

`BackboneWithFpn` is the module torchvision's `BackboneWithFPN` would be for our `Backbone`:
`forward(images) -> OrderedDict` of FPN maps ("0", "1", ... finest first, plus "pool", a
max-pooled extra level) and an `out_channels` attribute, which is all `FasterRCNN` asks of a
backbone. The detector is assembled from torchvision's classes directly (no model builder), so
no weights are ever downloaded: every weight is ours or freshly initialised.

Sizes are set for small images (a few hundred pixels, CPU-friendly): one anchor size per level,
doubling from level to level so the coarsest level's anchors span the whole image, and a
box head of 256 units instead of 1024.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from selfsup.backbones import Backbone
from selfsup.data.views import MEAN, STD
from selfsup.dense.decoder import check_layers


class BackboneWithFpn(nn.Module):
    """Normalised images (B, 3, H, W) -> OrderedDict of (B, out_channels, h_l, w_l) maps."""

    def __init__(self, backbone: Backbone, layers: list[str], out_channels: int = 128):
        super().__init__()
        check_layers(backbone, layers)
        self.body, self.layers, self.out_channels = backbone, layers, out_channels
        self.fpn = FeaturePyramidNetwork(
            [backbone.layer_channels[name] for name in layers],
            out_channels,
            extra_blocks=LastLevelMaxPool(),
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body.forward_layers(x, self.layers)
        return self.fpn(OrderedDict((str(i), maps[name]) for i, name in enumerate(self.layers)))


def anchor_sizes(image_size: int, levels: int) -> tuple[tuple[int], ...]:
    """One size per level, the coarsest equal to the image, halving towards the finest."""
    return tuple((max(8, round(image_size / 2 ** (levels - 1 - i))),) for i in range(levels))


def faster_rcnn(
    backbone: Backbone,
    layers: list[str],
    num_classes: int,
    image_size: int,
    fpn_channels: int = 128,
    box_head_units: int = 256,
) -> FasterRCNN:
    """Faster R-CNN + FPN on `layers` of `backbone` for images whose longer side is
    `image_size` px; `num_classes` object classes (torchvision adds the background, label 0)."""
    body = BackboneWithFpn(backbone, layers, fpn_channels)
    levels = len(layers) + 1  # + the "pool" level
    anchors = AnchorGenerator(anchor_sizes(image_size, levels), ((0.5, 1.0, 2.0),) * levels)
    feature_names = [str(i) for i in range(len(layers))]
    return FasterRCNN(
        body,
        num_classes=None,  # set by box_predictor
        min_size=image_size,  # images arrive at this size already: no resampling
        max_size=image_size,
        image_mean=list(MEAN),
        image_std=list(STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
        box_roi_pool=MultiScaleRoIAlign(feature_names, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_units),
        box_predictor=FastRCNNPredictor(box_head_units, num_classes + 1),
        box_batch_size_per_image=128,
        box_score_thresh=0.01,  # low: mAP integrates over the whole ranking
    )
