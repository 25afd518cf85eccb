"""Transitive invariance (Wang, He & Gupta, ICCV 2017): a triplet network on graph pairs.

Positive pairs come from the patch graph (`selfsup graph build`): inter-instance (different
objects that look alike), intra-instance (one object tracked through a video) and transitive
(both at once). Each anchor a with its positive p is compared with `negatives` other patches
of the batch n_k, of which a `hard_fraction` share are the most similar to a (hard-mined) and
the rest drawn at random. With f the L2-normalised embedding and D the cosine distance
D(x, y) = 1 - f(x).f(y), the ranking loss is

    l(a, p) = mean_k max(0, D(a, p) - D(a, n_k) + margin),     margin = 0.5

Ablations: `edges=inter` or `edges=intra` train on one edge type; `edges=transitive` (the
method) on all three. Patches of the anchor's or positive's track are never negatives.

The task reads `GraphPairs`: the loop hands it each step's pairs as `patches` (anchors, then
their positives) with their `tracks`; which pairs a step trains on is fixed by the seed, so
runs stay deterministic and resume exactly (`selfsup.data.pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.streams import GraphPairs
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.registry import register_task

EDGE_CHOICES = ("transitive", "inter", "intra")


@dataclass
class TransitiveConfig:
    graph: str = param(
        "", "Graph file from `selfsup graph build` (required to train: pass --graph GRAPH)."
    )
    patches: str = param(
        "", "Patch dataset the graph was built on; empty: data.path.", same_as="data.path"
    )
    edges: str = param(
        "transitive",
        "Positive pairs: transitive (inter + intra + transitive, the method), inter or intra "
        "(ablations).",
        choices=EDGE_CHOICES,
    )
    pairs_per_batch: int = param(64, "Anchor-positive pairs per step.", low=2)
    negatives: int = param(4, "Negatives per pair (predecessor code: 4).", low=1)
    hard_fraction: float = probability(
        0.5, "Share of the negatives hard-mined in the batch (predecessor code: half)."
    )
    margin: float = param(0.5, "Ranking margin on cosine distance (paper: 0.5).", low=0.0)
    embedding_dim: int = param(128, "Size of the L2-normalised embedding.", low=1)
    crop_size: int = param(32, "Side the patches are cropped and resized to (paper: 227).", low=8)
    crop_scale: list[float] = fraction_range([0.6, 1.0], "Area range of the random patch crop.")
    hflip_prob: float = probability(0.5, "Probability of mirroring a patch.")
    grayscale_prob: float = probability(0.2, "Probability of a grayscale patch.")


def ranking_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, margin: float
) -> torch.Tensor:
    """anchor, positive (B, d) and negatives (B, K, d), all L2-normalised -> scalar."""
    d_pos = 1 - (anchor * positive).sum(-1, keepdim=True)  # (B, 1)
    d_neg = 1 - torch.einsum("bd,bkd->bk", anchor, negatives)  # (B, K)
    return torch.relu(d_pos - d_neg + margin).mean()


def choose_negatives(
    anchor: torch.Tensor,
    pool: torch.Tensor,
    allowed: torch.Tensor,
    count: int,
    hard: int,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Indices (B, count) into `pool` (M, d): the `hard` most similar allowed items to each
    anchor, then random allowed items. `allowed` (B, M) bool masks out same-track items;
    `noise` (B, M), uniform in [0, 1), ranks the random picks."""
    sims = (anchor @ pool.T).detach().float()
    sims = sims.masked_fill(~allowed, float("-inf"))
    hardest = sims.topk(hard, dim=1).indices if hard else sims.new_zeros(len(sims), 0).long()
    noise = noise.masked_fill(~allowed, -1.0)
    noise.scatter_(1, hardest, -1.0)  # never pick a hard one twice
    random = noise.topk(count - hard, dim=1).indices
    return torch.cat([hardest, random], dim=1)


@register_task
class Transitive(PretextTask):
    name = "transitive"
    config_class = TransitiveConfig

    def __init__(self, config: TransitiveConfig, backbone: Backbone):
        super().__init__(config, backbone)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(backbone.num_features, config.embedding_dim),
        )

    def inputs(self) -> list:
        cfg = self.config
        return [GraphPairs(cfg.graph, cfg.patches, cfg.edges, cfg.pairs_per_batch)]

    def min_image_size(self) -> int:
        return 1

    def augment(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        x = V.random_resized_crop(patches, cfg.crop_size, generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        x = V.random_grayscale(x, cfg.grayscale_prob, generator)
        return V.normalize(x, MEAN, STD)

    def make_views(
        self, patches: torch.Tensor, tracks: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """patches (2B, 3, P, P) uint8, anchors then their positives, and their (2B,) track
        ids (on the host) -> crops, which patches may be each anchor's negatives, and how many."""
        crops = self.augment(patches, generator)
        # Which items may be negatives, and how many each anchor gets, are decided here from
        # the host's track ids, so the step never reads a count back from the GPU.
        tracks = tracks.cpu()
        batch = len(tracks) // 2
        # Anything of the anchor's or positive's track is the same object: not a negative.
        same = (tracks[None, :] == tracks[:batch, None]) | (tracks[None, :] == tracks[batch:, None])
        count = min(self.config.negatives, int((~same).sum(1).min()))
        if count < 1:
            raise ConfigError("transitive: a batch has no valid negatives; raise pairs_per_batch")
        return {
            "crops": crops,
            "allowed": ~same,  # (B, 2B)
            "noise": torch.rand(same.shape, generator=generator),  # ranks the random negatives
            # (K,): one entry per negative of each anchor; only its length K is read.
            "negative_slots": torch.arange(count),
        }

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)).float(), dim=1)

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        z = self.embed(views["crops"])
        batch = len(z) // 2
        anchor, positive = z[:batch], z[batch:]
        count = views["negative_slots"].numel()
        hard = min(count, round(cfg.hard_fraction * count))
        picked = choose_negatives(anchor, z, views["allowed"], count, hard, views["noise"])
        loss = ranking_loss(anchor, positive, z[picked], cfg.margin)
        with torch.no_grad():
            d_pos = 1 - (anchor * positive).sum(-1)
            d_neg = 1 - (anchor[:, None] * z[picked]).sum(-1)
            ranked = (d_pos[:, None] < d_neg).float().mean()
        return {"loss": loss, "positive_distance": d_pos.mean(), "pair_ranked_right": ranked}
