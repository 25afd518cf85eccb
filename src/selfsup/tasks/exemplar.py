"""Exemplar (Dosovitskiy et al., NIPS 2014), in the triplet form of Doersch & Zisserman 2017.

Every image is its own class: two heavily augmented views of it (random resized crop, flip,
colour jitter, grayscale; batched ops) must be closer in embedding space than views of other
images. Both views of the batch go through the shared backbone in one forward of 2B images;
a projection head (global pool -> MLP) gives embeddings z, L2-normalised. Two losses:

- `triplet` (the multi-task paper's scalable form of exemplar: anchor and positive are the
  two views of one image, the negatives are the other images of the batch), with the cosine
  distance d = 1 - cos and margin M, averaged over all (anchor, negative) pairs and both
  view orders:

      loss = mean_{i, j != i} max(0, M + d(z_i, z'_i) - d(z_i, z'_j))

- `infonce` (NT-Xent, SimCLR's loss; makes the task comparable to SimCLR): each of the 2B
  embeddings must pick its positive among the other 2B - 1 by softmax over cos / tau.

Negatives come from the local batch (under DDP, each rank's own images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.heads import mlp, pooled
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

LOSSES = ("triplet", "infonce")


@dataclass
class ExemplarConfig:
    loss: str = param(
        "triplet", "triplet (the multi-task paper) or infonce (NT-Xent, SimCLR).", choices=LOSSES
    )
    margin: float = param(
        0.5, "Triplet margin on the cosine distance (Wang & Gupta 2015's value: 0.5).", low=0.0
    )
    temperature: float = param(
        0.1, "InfoNCE temperature tau (SimCLR: 0.1-0.5).", low=0.0, low_exclusive=True
    )
    crop_scale: list[float] = fraction_range(
        [0.2, 1.0], "Area fraction range of each view's random-resized crop (SimCLR: 0.08-1)."
    )
    hflip_prob: float = probability(0.5, "Probability of mirroring a view.")
    input_size: int = param(
        0, "Side each view's crop is resized to, the trunk's input; 0: the image size.", low=0
    )
    color_jitter: float = param(
        0.4, "Brightness/contrast/saturation jitter strength (SimCLR: 0.8 x 0.5 = 0.4).", low=0.0
    )
    hue_jitter: float = param(
        0.0,
        "Hue shift of a jittered view, up to this fraction of the colour wheel either way "
        "(SimCLR: 0.2 x 0.5 = 0.1; 0 draws nothing, so earlier runs replay exactly); at most "
        "0.5, half the wheel.",
        low=0.0,
        high=0.5,
    )
    jitter_prob: float = probability(0.8, "Probability of colour-jittering a view.")
    grayscale_prob: float = probability(0.2, "Probability of making a view grayscale.")
    embedding_dim: int = param(128, "Size of the L2-normalised embedding.", low=1)
    head_hidden: list[int] = param([512], "Hidden widths of the projection MLP.")


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float) -> torch.Tensor:
    """L2-normalised anchor and positive embeddings (B, D) -> the batch-negative triplet loss.

    Negatives of anchor i are the positives of every other image j; both view orders count.

    >>> import torch, selfsup
    >>> z = torch.eye(2)  # two images, each view equal to its own: cosine distance 0 and 1
    >>> selfsup.triplet_loss(z, z, margin=0.5).item(), selfsup.triplet_loss(z, z, margin=1.5).item()
    (0.0, 0.5)
    """
    distance = 1 - anchor @ positive.T  # (B, B) cosine distances; diagonal: the positives
    positive_distance = distance.diagonal()
    others = ~torch.eye(len(anchor), dtype=torch.bool, device=anchor.device)
    # Row i: anchor i against negatives z'_j; column i: anchor z'_i against negatives z_j.
    by_row = torch.relu(margin + positive_distance[:, None] - distance)[others]
    by_column = torch.relu(margin + positive_distance[None, :] - distance)[others]
    return (by_row.mean() + by_column.mean()) / 2


def info_nce_loss(anchor: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """L2-normalised (B, D) pairs -> NT-Xent over the 2B embeddings (SimCLR eq. 1).

    >>> import torch, selfsup
    >>> z = torch.eye(2)  # logits of view 1 of image 0: [self: -inf, 0, its pair: 1, 0]
    >>> round(selfsup.info_nce_loss(z, z, temperature=1.0).item(), 4)  # log(2 + e) - 1
    0.5514
    """
    z = torch.cat([anchor, positive])  # (2B, D)
    batch = len(anchor)
    self_pairs = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_pairs, float("-inf"))  # not its own match
    target = (torch.arange(2 * batch, device=z.device) + batch) % (2 * batch)  # the other view
    return F.cross_entropy(logits, target)


def positive_is_nearest(anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Fraction of anchors whose most similar candidate among all positives is their own."""
    nearest = (anchor @ positive.T).argmax(dim=1)
    return (nearest == torch.arange(len(anchor), device=anchor.device)).float().mean()


@register_task
class Exemplar(PretextTask):
    name = "exemplar"
    config_class = ExemplarConfig

    def __init__(self, config: ExemplarConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.head = mlp(backbone.num_features, config.head_hidden, config.embedding_dim)

    def min_image_size(self) -> int:
        return self.backbone.min_input_size

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> one heavily augmented, normalised view (B, 3, s, s), s the
        `input_size` (or S)."""
        cfg = self.config
        size = cfg.input_size or images.shape[-1]
        x = V.random_resized_crop(images, size, generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        if cfg.color_jitter > 0 or cfg.hue_jitter > 0:
            s = cfg.color_jitter
            x = V.color_jitter(
                x, generator, brightness=s, contrast=s, saturation=s, p=cfg.jitter_prob,
                hue=cfg.hue_jitter,
            )  # fmt: skip
        x = V.random_grayscale(x, cfg.grayscale_prob, generator)
        return V.normalize(x, MEAN, STD)

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if images.shape[0] < 2:
            raise ConfigError("data.batch_size: exemplar needs >= 2 images per batch (negatives)")
        first, second = self.augment(images, generator), self.augment(images, generator)
        return {"views": torch.cat([first, second])}  # (2B, 3, S, S)

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """Both views of each image side by side: the pair the loss pulls together."""
        first, second = views["views"].chunk(2)
        pairs = torch.stack([first[:count], second[:count]], 1).flatten(0, 1)
        labels = [f"{i} view {v}" for i in range(len(pairs) // 2) for v in (1, 2)]
        return {"view_pairs": labelled_grid(display(pairs), labels, 8)}

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = views["views"]
        embeddings = self.head(pooled(self.backbone(x), 1)).float()  # (2B, D)
        z = F.normalize(embeddings, dim=1)
        anchor, positive = z.chunk(2)
        if self.config.loss == "triplet":
            loss = triplet_loss(anchor, positive, self.config.margin)
        else:
            loss = info_nce_loss(anchor, positive, self.config.temperature)
        return {"loss": loss, "positive_top1": positive_is_nearest(anchor, positive).detach()}
