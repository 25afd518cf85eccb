"""Transitive invariance (Wang, He & Gupta, ICCV 2017): a triplet network on graph pairs.

Positive pairs come from the patch graph (`selfsup graph build`): inter-instance (different
objects that look alike), intra-instance (one object and its view after tracking) and
transitive (both at once), mixed in a batch in the shares `pair_shares` (the realised shares
are logged as `share_inter`, `share_intra`, `share_transitive`). Each anchor a with its
positive p is compared with `negatives` other patches of the batch n_k, of which a
`hard_fraction` share are the most similar to a (hard-mined) and the rest drawn at random.
With f the L2-normalised embedding and D the cosine distance D(x, y) = 1 - f(x).f(y), the
ranking loss is

    l(a, p) = mean_k max(0, D(a, p) - D(a, n_k) + margin),     margin = 0.5

Ablations: `edges=inter` or `edges=intra` train on one edge type; `edges=transitive` (the
method) on all three. A negative is never connected to its anchor: patches of the anchor's or
the positive's track, and every patch the graph pairs with the anchor (by any type: a
clique-mate, a view, a transitive partner), are left out. An anchor with fewer such patches
in the batch than `negatives` uses those it has.

The embedding reads the backbone's final layer: a linear layer on the final vector when the
backbone ends in fully connected layers (VGG16's fc7, where the paper's embedding sits), on
the globally pooled final map otherwise; `embedding_dim=0` takes that vector itself.

The task reads `GraphPairs`: the loop hands it each step's pairs as `patches` (anchors, then
their positives) with their `tracks`, `pair_types` and the graph's pairs among them
(`connected`); which pairs a step trains on is fixed by the seed, so runs stay deterministic
and resume exactly (`selfsup.data.pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, fraction_range, param, probability
from selfsup.data import views as V
from selfsup.data.patch_graph import EDGE_TYPES
from selfsup.data.streams import GraphPairs
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

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
    pair_shares: list[float] = param(
        [1.0, 1.0, 1.0],
        "Relative shares of inter, intra and transitive pairs in every batch of "
        "edges=transitive (the counts per batch are rounded from them). The paper states no "
        "mix; drawn from the merged list, transitive pairs (dozens per inter pair) would fill "
        "nearly every batch. A type the graph lacks gets none.",
        length=3,
        low=0.0,
    )
    pairs_per_batch: int = param(64, "Anchor-positive pairs per step.", low=2)
    negatives: int = param(4, "Negatives per pair (predecessor code: 4).", low=1)
    hard_fraction: float = probability(
        0.5, "Share of the negatives hard-mined in the batch (predecessor code: half)."
    )
    margin: float = param(0.5, "Ranking margin on cosine distance (paper: 0.5).", low=0.0)
    embedding_dim: int = param(
        128,
        "Size of the L2-normalised embedding, a linear layer on the backbone's final vector "
        "(VGG16: fc7) or pooled final map; 0: that vector itself.",
        low=0,
    )
    crop_size: int = param(32, "Side the patches are cropped and resized to (paper: 227).", low=8)
    crop_scale: list[float] = fraction_range([0.6, 1.0], "Area range of the random patch crop.")
    hflip_prob: float = probability(0.5, "Probability of mirroring a patch.")
    grayscale_prob: float = probability(0.2, "Probability of a grayscale patch.")

    def check(self, prefix: str) -> None:
        if self.edges == "transitive" and not any(self.pair_shares):
            raise ConfigError(f"{prefix}.pair_shares: at least one share must be above 0")

    def shares(self) -> tuple[float, float, float]:
        """Weights of inter, intra and transitive pairs in a batch: `pair_shares`, or all of
        one type for the `inter` and `intra` ablations."""
        if self.edges == "transitive":
            return tuple(self.pair_shares)
        return tuple(float(name == self.edges) for name in EDGE_TYPES)


def ranking_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    margin: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """anchor, positive (B, d) and negatives (B, K, d), all L2-normalised -> scalar: the mean
    over the (B, K) triplets, or over those `valid` marks.

    >>> import torch, selfsup
    >>> anchor = torch.tensor([[1.0, 0.0]])  # the positive is the anchor: distance 0
    >>> negatives = torch.tensor([[[0.0, 1.0]]])  # one negative at cosine distance 1
    >>> selfsup.ranking_loss(anchor, anchor, negatives, margin=1.5).item()
    0.5
    """
    d_pos = 1 - (anchor * positive).sum(-1, keepdim=True)  # (B, 1)
    d_neg = 1 - torch.einsum("bd,bkd->bk", anchor, negatives)  # (B, K)
    losses = torch.relu(d_pos - d_neg + margin)
    if valid is None:
        return losses.mean()
    return (losses * valid).sum() / valid.sum().clamp(min=1)


def choose_negatives(
    anchor: torch.Tensor,
    pool: torch.Tensor,
    allowed: torch.Tensor,
    count: int,
    hard: int,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (B, count) into `pool` (M, d): the `hard` most similar allowed items to each
    anchor, then random allowed items; and (B, count) bool, whether each is a real pick (an
    anchor with fewer allowed items than `count` fills its other slots with invalid ones,
    decided on the device: no host sync). `allowed` (B, M) bool masks out what may not be a
    negative; `noise` (B, M), uniform in [0, 1), ranks the random picks."""
    sims = (anchor @ pool.T).detach().float()
    sims = sims.masked_fill(~allowed, float("-inf"))
    best, hardest = sims.topk(hard, dim=1)
    noise = noise.masked_fill(~allowed, -1.0)
    noise.scatter_(1, hardest, -1.0)  # never pick a hard one twice
    luck, random = noise.topk(count - hard, dim=1)
    valid = torch.cat([best > float("-inf"), luck >= 0], dim=1)
    return torch.cat([hardest, random], dim=1), valid


def negative_mask(tracks: torch.Tensor, connected: torch.Tensor) -> torch.Tensor:
    """(2B,) track ids of anchors then positives, (2B, 2B) graph pairs among them -> (B, 2B)
    bool: which patches may be each anchor's negatives. Not the anchor's or the positive's
    track (the same object), nor anything the graph pairs with the anchor."""
    batch = len(tracks) // 2
    same = (tracks[None, :] == tracks[:batch, None]) | (tracks[None, :] == tracks[batch:, None])
    return ~same & ~connected[:batch]


@register_task
class Transitive(PretextTask):
    name = "transitive"
    config_class = TransitiveConfig

    def __init__(self, config: TransitiveConfig, backbone: Backbone):
        super().__init__(config, backbone)
        # A vector (fc7) is read as it is; a spatial map is pooled to one first.
        reader = (
            nn.Flatten()
            if backbone.final_is_vector
            else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        )
        dim = config.embedding_dim
        projection = nn.Linear(backbone.num_features, dim) if dim else nn.Identity()
        self.head = nn.Sequential(reader, projection)

    def inputs(self) -> list:
        cfg = self.config
        return [GraphPairs(cfg.graph, cfg.patches, cfg.shares(), cfg.pairs_per_batch)]

    def min_image_size(self) -> int:
        return 1

    def augment(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        x = V.random_resized_crop(patches, cfg.crop_size, generator, scale=tuple(cfg.crop_scale))
        x = V.random_hflip(x, cfg.hflip_prob, generator)
        x = V.random_grayscale(x, cfg.grayscale_prob, generator)
        return V.normalize(x, MEAN, STD)

    def make_views(
        self,
        patches: torch.Tensor,
        tracks: torch.Tensor,
        pair_types: torch.Tensor,
        connected: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """patches (2B, 3, P, P) uint8, anchors then their positives; on the host their (2B,)
        track ids, the (B,) types of the pairs and the (2B, 2B) graph pairs among them ->
        crops, which patches may be each anchor's negatives, and how many."""
        crops = self.augment(patches, generator)
        # Which items may be negatives, and how many each anchor gets, are decided here on
        # the host, so the step never reads a count back from the GPU.
        allowed = negative_mask(tracks.cpu(), connected.cpu())  # (B, 2B)
        count = min(self.config.negatives, int(allowed.sum(1).max()))
        if count < 1:
            raise ConfigError("transitive: a batch has no valid negatives; raise pairs_per_batch")
        return {
            "crops": crops,
            "allowed": allowed,
            "noise": torch.rand(allowed.shape, generator=generator),  # ranks the random negatives
            # (K,): one entry per negative of each anchor; only its length K is read.
            "negative_slots": torch.arange(count),
            "pair_types": pair_types,
        }

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """A row per pair: anchor, positive (labelled with the pair's edge type) and one of
        the anchor's allowed negatives (the first random one; hard ones depend on the
        embedding)."""
        crops = display(views["crops"])
        batch = len(crops) // 2
        allowed = views["allowed"].cpu()
        negative = views["noise"].cpu().masked_fill(~allowed, -1).argmax(1)  # (B,)
        shown = min(count, batch)
        rows = torch.stack(
            [crops[:shown], crops[batch : batch + shown], crops[negative[:shown]]], 1
        )
        kinds = views["pair_types"][:shown].tolist()
        labels = [text for k in kinds for text in ("anchor", EDGE_TYPES[k], "negative")]
        return {"anchor_positive_negative": labelled_grid(rows.flatten(0, 1), labels, 6)}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)).float(), dim=1)

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        z = self.embed(views["crops"])
        batch = len(z) // 2
        anchor, positive = z[:batch], z[batch:]
        count = views["negative_slots"].numel()
        hard = min(count, round(cfg.hard_fraction * count))
        picked, valid = choose_negatives(anchor, z, views["allowed"], count, hard, views["noise"])
        loss = ranking_loss(anchor, positive, z[picked], cfg.margin, valid)
        with torch.no_grad():
            d_pos = 1 - (anchor * positive).sum(-1)
            d_neg = 1 - (anchor[:, None] * z[picked]).sum(-1)
            right = ((d_pos[:, None] < d_neg) & valid).sum() / valid.sum().clamp(min=1)
            kinds = views["pair_types"]
            shares = {
                f"share_{name}": (kinds == t).float().mean() for t, name in enumerate(EDGE_TYPES)
            }
        return {
            "loss": loss,
            "positive_distance": d_pos.mean(),
            "pair_ranked_right": right,
            **shares,
        }
