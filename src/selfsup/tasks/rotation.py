"""Rotation prediction, RotNet (Gidaris, Singh, Komodakis, ICLR 2018).

Every image is shown at all four rotations by k x 90 degrees (k = 0..3, counter-clockwise as
displayed: `torch.rot90` over (H, W)), batched into one forward of 4B images, and the network
classifies k:

    loss = CE(head(pool(phi(rot_k(x)))), k)

Recognising "which way is up" requires knowing where an object's parts are. Feeding all four
rotated copies of each image in the same batch (rather than one random rotation) is the
paper's choice, found better there: the same content is seen with every label. Views must be
square, which the loader guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.backbones import Backbone
from selfsup.config import fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.heads import mlp, pooled
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

NUM_ROTATIONS = 4


@dataclass
class RotationConfig:
    crop_scale: list[float] = fraction_range(
        [1.0, 1.0],
        "Area fraction range of a random-resized crop before rotating; [1, 1] keeps whole images.",
    )
    hflip_prob: float = probability(0.5, "Probability of mirroring an image before rotating.")
    head_pool: int = param(
        1, "The final map is average-pooled to head_pool x head_pool for the head.", low=1
    )
    head_hidden: list[int] = param(
        [], "Hidden widths of the classifier (empty: linear; the paper uses conv blocks)."
    )


def all_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> rotated images (4B, C, S, S) and their labels k (4B,), image-major:
    rows 4i..4i+3 are image i rotated by 0, 90, 180, 270 degrees."""
    rotated = torch.stack([torch.rot90(images, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)], 1)
    labels = torch.arange(NUM_ROTATIONS, device=images.device).repeat(images.shape[0])
    return rotated.flatten(0, 1), labels


@register_task
class Rotation(PretextTask):
    name = "rotation"
    config_class = RotationConfig

    def __init__(self, config: RotationConfig, backbone: Backbone):
        super().__init__(config, backbone)
        features = backbone.num_features * config.head_pool**2
        self.head = mlp(features, config.head_hidden, NUM_ROTATIONS)

    def min_image_size(self) -> int:
        return self.backbone.min_input_size

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.crop_scale == [1.0, 1.0]:
            x = V.to_float(images)
        else:
            size = images.shape[-1]
            x = V.random_resized_crop(images, size, generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        rotated, rotation = all_rotations(V.normalize(x, MEAN, STD))
        return {"images": rotated, "rotation": rotation}

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """Each image in its four rotations, labelled with the angle the head must tell."""
        images = views["images"][: NUM_ROTATIONS * count]
        labels = [f"{90 * int(k)} deg" for k in views["rotation"][: len(images)]]
        return {"rotations": labelled_grid(display(images), labels, 2 * NUM_ROTATIONS)}

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rotation = views["rotation"]
        features = pooled(self.backbone(views["images"]), self.config.head_pool)
        logits = self.head(features).float()  # (4B, 4)
        loss = F.cross_entropy(logits, rotation)
        accuracy = (logits.argmax(dim=1) == rotation).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}
