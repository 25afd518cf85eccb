"""Supervised classification: the ceiling baseline, and fine-tuning of a pretrained backbone.

Not a pretext task: it reads the data's labels. It runs through the same training loop so a
supervised baseline gets exactly the budget, data pipeline and optimiser of a self-supervised
run, and fine-tuning is this task started from a pretrained backbone (`train.init_backbone`)
with a lower backbone learning rate (`backbone_lr_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.formats import class_count
from selfsup.data.streams import Images
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid


@dataclass
class SupervisedConfig:
    num_classes: int = param(
        0,
        "Classes of the linear head; 0 takes them from the data (its class folders or labels).",
        low=0,
        from_data=class_count,
    )
    crop_scale: list[float] = fraction_range(
        [0.35, 1.0], "Area fraction range of the random-resized crop (resized to the image size)."
    )
    hflip_prob: float = probability(0.5, "Probability of mirroring an image.")
    backbone_lr_scale: float = param(
        1.0, "Backbone learning rate relative to the head (fine-tuning: 0.1).", low=0.0
    )
    label_smoothing: float = param(
        0.0, "Cross-entropy label smoothing.", low=0.0, high=1.0, high_exclusive=True
    )


def classify(backbone: Backbone, head: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, H, W) -> logits (B, num_classes): global pool, linear."""
    features = backbone(images).mean(dim=(2, 3))  # (B, C)
    return head(features)


@register_task
class Supervised(PretextTask):
    name = "supervised"
    config_class = SupervisedConfig

    def __init__(self, config: SupervisedConfig, backbone: Backbone):
        super().__init__(config, backbone)
        if config.num_classes < 1:
            raise ConfigError("supervised.num_classes: unknown; set it or train on labelled data")
        self.head = nn.Linear(backbone.num_features, config.num_classes)

    def lr_scales(self) -> dict[str, float]:
        return {"backbone.": self.config.backbone_lr_scale}

    def inputs(self) -> list:
        return [Images(labels=True)]

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        x = V.random_resized_crop(images, images.shape[-1], generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        return {"images": V.normalize(x, MEAN, STD), "labels": labels}

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """The training crops with their class indices."""
        labels = [f"class {int(c)}" for c in views["labels"][:count]]
        return {"images": labelled_grid(display(views["images"][:count]), labels, 8)}

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = classify(self.backbone, self.head, views["images"]).float()
        labels = views["labels"]
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "train_top1": accuracy.detach()}
