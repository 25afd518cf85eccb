"""What every pretext task is: a module that owns its views, its heads and its loss.

The training loop knows nothing about any task. It opens the inputs the task declares
(`inputs()`: images of the training data by default; see `selfsup.data.streams`) and per step
calls

    views = task.make_views(**fields, generator=generator)  # batched ops, e.g. images=(B, 3, S, S)
    out = task(views)                                       # {"loss": scalar, <metric>: scalar}

and back-propagates `out["loss"]`. The fields are those of the declared inputs: `images`
(uint8), `labels` with `Images(labels=True)`, `masks` ((B, S, S) uint8 0/1, pixel-aligned with
the images) with `Images(masks=True)`, `patches`, `tracks`, `pair_types` and `connected` with
`GraphPairs`. A task holds no data. The backbone is `task.backbone`, which is what evaluation
and export read from a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.backbones import Backbone
from selfsup.data.streams import Images
from selfsup.tasks.view_grids import display, labelled_grid


class PretextTask(nn.Module):
    """Base class; subclasses set `name`, `config_class` and implement the two methods.

    A task of your own (decorated with `selfsup.tasks.register_task`, it trains through
    the same loop and CLI by its name):

    >>> import torch, selfsup
    >>> from selfsup.data import views as V
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class FlipConfig:
    ...     pass
    >>> class Flip(selfsup.PretextTask):  # was the image mirrored?
    ...     name, config_class = "flip-example", FlipConfig
    ...     def __init__(self, config, backbone):
    ...         super().__init__(config, backbone)
    ...         self.head = torch.nn.Linear(backbone.num_features, 2)
    ...     def make_views(self, images, generator):
    ...         flipped = torch.randint(0, 2, (len(images),), generator=generator)
    ...         x = torch.where(flipped[:, None, None, None] == 1, images.flip(-1), images)
    ...         return {"x": V.normalize(x, V.MEAN, V.STD), "flipped": flipped}
    ...     def forward(self, views):
    ...         logits = self.head(self.backbone(views["x"]).mean((2, 3)))
    ...         return {"loss": torch.nn.functional.cross_entropy(logits, views["flipped"])}
    >>> task = Flip(FlipConfig(), selfsup.build_backbone("alexnet_small"))
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> task(task.make_views(images, torch.Generator().manual_seed(0)))["loss"].requires_grad
    True
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, backbone: Backbone):
        super().__init__()
        self.config = config
        self.backbone = backbone

    def inputs(self) -> list:
        """What the task reads, as `selfsup.data.streams` requests: the training images."""
        return [Images()]

    def make_views(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        """The fields of one step's inputs ((B, 3, S, S) uint8 images by default) -> the
        tensors `forward` needs."""
        raise NotImplementedError

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss (key "loss") and scalar metrics for logging."""
        raise NotImplementedError

    def single_tasks(self) -> dict[str, PretextTask]:
        """The tasks this one trains, by name: itself (multi-task: its sub-tasks)."""
        return {self.name: self}

    def min_image_size(self) -> int:
        """Smallest `data.image_size` the task's views can be built from."""
        return 1

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name prefix (e.g. {"backbone.": 0.1})."""
        return {}

    def no_weight_decay(self) -> set[str]:
        """Parameter-name prefixes that take no weight decay whatever `optim` says (e.g. a
        parameter with a penalty of its own in the loss)."""
        return set()

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """One step's views as labelled pictures, {name: (3, H, W) float in [0, 1]}, which
        `train.logger=tensorboard` writes: by default the first `count` images of every
        image view (B, 3, H, W), normalised as the trunk's input is. Tasks whose views
        come in pairs, tiles or with labels draw them so (see `view_grids.py`)."""
        return {
            key: labelled_grid(display(value[:count]))
            for key, value in views.items()
            if torch.is_tensor(value) and value.dim() == 4 and value.shape[1] == 3
        }

    def backward_metrics(self) -> dict[str, torch.Tensor]:
        """Scalars measured during the last backward (device tensors, never read here); the
        loop logs them with the outputs of `forward`."""
        return {}
