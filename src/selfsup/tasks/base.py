"""What every pretext task is: a module that owns its views, its heads and its loss.

The training loop knows nothing about any task. Per step it calls

    views = task.make_views(images, generator, labels)  # batched ops on (B, 3, S, S) uint8
    out = task(views)                                   # {"loss": scalar, <metric>: scalar}

and back-propagates `out["loss"]`. `labels` is None unless the task sets `needs_labels`. A task
that sets `needs_masks` is also given `masks=`: (B, S, S) uint8 per-pixel masks (nonzero = on),
pixel-aligned with `images`. The backbone is `task.backbone`, which is what evaluation and
export read from a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.backbones import Backbone


class PretextTask(nn.Module):
    """Base class; subclasses set `name`, `config_class` and implement the two methods."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    needs_labels: ClassVar[bool] = False  # supervised baselines read the data's labels
    needs_masks: ClassVar[bool] = False  # dense tasks (motion segmentation) read the data's masks

    def __init__(self, config: Any, backbone: Backbone):
        super().__init__()
        self.config = config
        self.backbone = backbone

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """(B, 3, S, S) uint8 (and (B,) labels) -> the tensors `forward` needs."""
        raise NotImplementedError

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss (key "loss") and scalar metrics for logging."""
        raise NotImplementedError

    def attach_data(self, data_path: str) -> None:
        """Load data the task draws itself besides the loop's images (graph pairs, motion
        masks); called once by the loop with `data.path` before training."""

    def min_image_size(self) -> int:
        """Smallest `data.image_size` the task's views can be built from."""
        return 1

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name prefix (e.g. {"backbone.": 0.1})."""
        return {}
