"""Motion segmentation (Pathak et al., CVPR 2017), as used by Doersch & Zisserman 2017.

From a single frame the network predicts which pixels move: a dense head on a backbone
feature map gives per-pixel logits, upsampled to 1/output_stride of the input, trained with
binary cross-entropy against motion masks computed from the video around that frame:

    loss = mean_{h,w} BCE(logit(h, w), m(h, w); pos_weight)

m is the fraction of moving pixels in each output cell (the mask area-downsampled), so mask
boundaries give soft targets. The masks are unsupervised (optical flow with camera motion
removed; `selfsup video masks`), never ground truth: the network learns what tends to move.

Data: an .npz with `images` (N, H, W, 3) uint8 and `masks` (N, H, W) (nonzero = moving); the
task declares `Images(masks=True)`, so the training loop hands it each batch's masks. Crops and
flips are applied to the image and its mask as one tensor, so they always stay pixel-aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.backbones import Backbone
from selfsup.config import fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.streams import Images
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.heads import DenseHead, feature_layer
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid


@dataclass
class MotionSegmentationConfig:
    crop_scale: list[float] = fraction_range(
        [0.5, 1.0],
        "Area fraction range of the random-resized crop (resized to the image size); "
        "[1, 1] keeps whole frames.",
    )
    hflip_prob: float = probability(0.5, "Probability of mirroring a frame and its mask.")
    grayscale_prob: float = probability(0.0, "Probability of making a frame grayscale.")
    input_size: int = param(
        0,
        "Side the frame (and its mask) is resized to, the trunk's input; 0: the image size.",
        low=0,
    )
    output_stride: int = param(
        4, "Predictions and targets are at 1/output_stride of the input side.", low=1
    )
    feature_layer: str = param(
        "", "Backbone layer the head reads (e.g. conv5, layer3); empty: the final map."
    )
    head_hidden: int = param(256, "Channels of the head's 3x3 conv.", low=1)
    pos_weight: float = param(
        1.0,
        "Weight of moving pixels in the BCE (>1 counters their rarity; e.g. the ratio of "
        "static to moving pixels).",
        low=0.0,
        low_exclusive=True,
    )


def crop_and_flip_with_masks(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    crop_scale: tuple[float, float],
    hflip_prob: float,
    size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (B, 3, S, S) and masks (B, S, S) -> float images in [0, 1] and masks in
    [0, 1] (resampled), both (B, ., s, s) after one shared random-resized crop (to side
    `size`, 0: S) and flip."""
    joint = V.with_mask_channel(images, (masks != 0).float())
    size = size or images.shape[-1]
    if tuple(crop_scale) != (1.0, 1.0):
        joint = V.random_resized_crop(joint, size, generator, scale=crop_scale)
    elif size != images.shape[-1]:
        joint = V.resize(joint, size, "area" if size < images.shape[-1] else "bilinear")
    joint = V.random_hflip(joint, hflip_prob, generator)
    return V.split_mask_channel(joint)


def binary_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the predicted moving pixels (logit > 0) with the target ones (> 1/2), batch-wide."""
    predicted, moving = logits > 0, targets > 0.5
    union = (predicted | moving).sum()
    return (predicted & moving).sum() / union.clamp_min(1)


@register_task
class MotionSegmentation(PretextTask):
    name = "motion-segmentation"
    config_class = MotionSegmentationConfig

    def __init__(self, config: MotionSegmentationConfig, backbone: Backbone):
        super().__init__(config, backbone)
        key = "motion-segmentation.feature_layer"
        self.layer = feature_layer(backbone, config.feature_layer, key)
        self.head = DenseHead(backbone.layer_channels[self.layer], config.head_hidden, 1)

    def min_image_size(self) -> int:
        return max(self.config.output_stride, self.backbone.min_input_size)

    def inputs(self) -> list:
        return [Images(masks=True)]

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator, masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        x, m = crop_and_flip_with_masks(
            images, masks, generator, tuple(cfg.crop_scale), cfg.hflip_prob, cfg.input_size
        )
        x = V.random_grayscale(x, cfg.grayscale_prob, generator)
        # Soft targets: the moving fraction of each output cell.
        targets = F.adaptive_avg_pool2d(m[:, None], x.shape[-1] // cfg.output_stride)
        return {"images": V.normalize(x, MEAN, STD), "targets": targets[:, 0]}

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """Each frame beside its motion mask (the target), drawn in red over the frame."""
        frames = display(views["images"][:count])
        mask = views["targets"][:count, None].float().cpu()
        mask = F.interpolate(mask, size=frames.shape[-2:], mode="nearest")  # (n, 1, H, W)
        red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        overlay = frames * (1 - 0.6 * mask) + 0.6 * mask * red
        pairs = torch.stack([frames, overlay], 1).flatten(0, 1)
        labels = ["frame", "moving"] * len(frames)
        return {"frames_and_masks": labelled_grid(pairs, labels, 8)}

    def logits(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """Normalised frames (B, 3, H, W) -> moving logits (B, size, size)."""
        features = self.backbone.forward_layers(images, [self.layer])[self.layer]
        return self.head(features, size)[:, 0]

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = views["targets"]  # (B, h, w) in [0, 1]
        logits = self.logits(views["images"], targets.shape[-1]).float()
        pos_weight = logits.new_full((), self.config.pos_weight)  # a fill, not a host copy
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
        accuracy = ((logits > 0) == (targets > 0.5)).float().mean()
        return {
            "loss": loss,
            "pixel_accuracy": accuracy.detach(),
            "iou": binary_iou(logits, targets).detach(),
        }
