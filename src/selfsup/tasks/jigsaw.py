"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016).

A 3x3 grid of tiles, separated by gaps and each shifted by a random jitter, is cut from the
image and shuffled by one permutation P_y out of a fixed set of N; the network must say which:

    loss = CE(head([f(phi(t_P_y(0))), ..., f(phi(t_P_y(8)))]), y),   y in 0..N-1

Shuffled position i holds original tile P_y[i] (tiles numbered row-major). Every tile goes
through the shared backbone (one batched forward of 9B tiles), then a shared per-tile layer f
(the paper's fc6); the nine vectors are concatenated in shuffled order for the classifier.

The permutation set follows the paper's Algorithm 1 (maximal Hamming distance): the first
permutation is drawn at random (from `permutation_seed`), then each next one is the
permutation, among all 9! not yet chosen, with the largest sum of Hamming distances to the
chosen ones (ties: the first in lexicographic order). Far-apart permutations make the task
about the tiles' content rather than about telling near-identical orders apart.

Shortcut guards: gaps and jitter (no edge continuity between tiles), per-tile
standardisation (no brightness gradients), random grayscale (no chromatic aberration).

Sizes: the paper cuts 64 px tiles from 75 px cells of a 225 px crop (gap and jitter ~11 px).
The defaults (8 px tiles, 3 px gaps, +-1 px jitter: a 32 px grid) fit 32 px CIFAR images; for
64 px images try tile_size=16 gap=6 jitter=2. Tiles are resized to `input_size` (at least the
backbone's `min_input_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import Backbone
from selfsup.config import ConfigError, param, probability
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask
from selfsup.tasks.heads import mlp, pooled
from selfsup.tasks.registry import register_task
from selfsup.tasks.view_grids import display, labelled_grid

NUM_TILES = 9
MAX_PERMUTATIONS = 362_880  # 9!


@dataclass
class JigsawConfig:
    num_permutations: int = param(
        100, "N, the size of the permutation set (paper: 1000; 100 among its ablations).", low=2
    )
    permutation_seed: int = param(0, "Seed of the first permutation of the set.")
    tile_size: int = param(8, "Side of each tile in image pixels (paper: 64).", low=1)
    gap: int = param(3, "Pixels between neighbouring tiles before jitter.", low=0)
    jitter: int = param(1, "Each tile moves by up to +-jitter px in x and y.", low=0)
    input_size: int = param(
        0,
        "Side tiles are resized to before the backbone; 0: tile_size. Raised to the "
        "backbone's min_input_size when smaller.",
        low=0,
    )
    standardize_tiles: bool = param(
        True,
        "Normalise each tile to zero mean, unit std per channel, instead of the fixed ImageNet "
        "statistics (paper: on).",
    )
    grayscale_prob: float = probability(
        0.3, "Probability of making an image grayscale (common jigsaw setting: 0.3)."
    )
    head_pool: int = param(1, "Each tile's final map is average-pooled to head_pool^2.", low=1)
    tile_features: int = param(256, "Width of the shared per-tile layer (paper fc6: 1024).", low=1)
    head_hidden: list[int] = param(
        [512], "Hidden widths of the classifier on the 9 tiles (paper fc7: 4096)."
    )

    def check(self, prefix: str) -> None:
        if self.num_permutations > MAX_PERMUTATIONS:
            raise ConfigError(f"{prefix}.num_permutations: at most 9! = {MAX_PERMUTATIONS}")


def lexicographic_permutations(n: int) -> np.ndarray:
    """All n! permutations of 0..n-1, (n!, n) int8, in lexicographic order (as itertools)."""
    if n == 1:
        return np.zeros((1, 1), dtype=np.int8)
    smaller = lexicographic_permutations(n - 1)
    blocks = []
    for first in range(n):
        rest = np.array([v for v in range(n) if v != first], dtype=np.int8)
        head = np.full((len(smaller), 1), first, dtype=np.int8)
        blocks.append(np.concatenate([head, rest[smaller]], axis=1))
    return np.concatenate(blocks)


@lru_cache(maxsize=8)
def maximal_hamming_permutations(count: int, seed: int) -> np.ndarray:
    """(count, 9) permutations chosen greedily for maximal Hamming distance (Algorithm 1 of
    Noroozi & Favaro 2016). Deterministic given (count, seed)."""
    everything = lexicographic_permutations(NUM_TILES)  # (9!, 9)
    by_position = np.ascontiguousarray(everything.T)  # (9, 9!): one fast row per position
    chosen = [int(np.random.default_rng(seed).integers(len(everything)))]
    # Sum of Hamming distances from every permutation to the chosen set, grown one at a time.
    total = np.zeros(len(everything), dtype=np.int32)
    for _ in range(count - 1):
        latest = everything[chosen[-1]]
        agree = np.zeros(len(everything), dtype=np.int8)
        for position in range(NUM_TILES):
            agree += by_position[position] == latest[position]
        total += NUM_TILES - agree
        total[chosen] = -1  # never choose a permutation twice
        chosen.append(int(total.argmax()))  # argmax: the first of the tied maxima
    return everything[chosen].astype(np.int64)


def shuffle_tiles(tiles: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Tiles (B, 9, ...) and one permutation per image (B, 9) -> shuffled tiles (B, 9, ...),
    shuffled[:, i] = tiles[:, permutation[i]]."""
    rows = torch.arange(tiles.shape[0], device=tiles.device)[:, None]
    return tiles[rows, V.on_device(permutations, tiles.device)]


def unshuffle_tiles(shuffled: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """The inverse of `shuffle_tiles`: original[:, permutation[i]] = shuffled[:, i]."""
    inverse = torch.argsort(V.on_device(permutations, shuffled.device), dim=1)
    rows = torch.arange(shuffled.shape[0], device=shuffled.device)[:, None]
    return shuffled[rows, inverse]


@register_task
class Jigsaw(PretextTask):
    name = "jigsaw"
    config_class = JigsawConfig

    def __init__(self, config: JigsawConfig, backbone: Backbone):
        super().__init__(config, backbone)
        permutations = maximal_hamming_permutations(
            config.num_permutations, config.permutation_seed
        )
        # Not saved in checkpoints: the config regenerates exactly the same set.
        self.register_buffer("permutations", torch.from_numpy(permutations), persistent=False)
        self.input_size = max(config.input_size or config.tile_size, backbone.min_input_size)
        features = backbone.num_features * config.head_pool**2
        self.tile_layer = nn.Sequential(
            nn.Linear(features, config.tile_features), nn.ReLU(inplace=True)
        )
        self.head = mlp(NUM_TILES * config.tile_features, config.head_hidden, len(permutations))

    def min_image_size(self) -> int:
        cfg = self.config
        return V.grid_extent(cfg.tile_size, cfg.gap, cfg.jitter)

    def cut_tiles(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, C, S, S) -> the 3x3 grid's tiles (B, 9, C, t, t), row-major."""
        cfg = self.config
        top, left = V.grid_positions(
            images.shape[0], images.shape[-1], cfg.tile_size, cfg.gap, cfg.jitter, generator
        )
        return V.crop_at(images, top, left, cfg.tile_size)

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        x = V.random_grayscale(V.to_float(images), cfg.grayscale_prob, generator)
        tiles = self.cut_tiles(x, generator)  # (B, 9, C, t, t)
        batch = images.shape[0]
        label = torch.randint(0, len(self.permutations), (batch,), generator=generator)
        label = V.on_device(label, images.device)
        shuffled = shuffle_tiles(
            tiles, V.on_device(self.permutations, images.device)[label]
        ).flatten(0, 1)
        if self.input_size != cfg.tile_size:
            shuffled = V.resize(shuffled, self.input_size, "bilinear")
        if cfg.standardize_tiles:
            shuffled = V.standardize(shuffled)
        else:
            shuffled = V.normalize(shuffled, MEAN, STD)
        return {"tiles": shuffled, "permutation": label}  # tiles: (9B, C, s, s)

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """A row per image: its nine tiles in the shuffled order the network sees, each
        labelled with its place in the original grid (row-major), the first also with the
        permutation's index (the class the head predicts)."""
        label = views["permutation"][:count].cpu()
        tiles = views["tiles"][: NUM_TILES * len(label)]
        places = self.permutations.cpu()[label].tolist()  # (n, 9): original tile of each slot
        labels = [
            f"#{int(p)}: {row[0]}" if i == 0 else str(row[i])
            for p, row in zip(label, places)
            for i in range(NUM_TILES)
        ]
        shown = display(tiles, standardized=self.config.standardize_tiles)
        return {"shuffled_tiles": labelled_grid(shown, labels, NUM_TILES)}

    def forward(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        label = views["permutation"]
        features = pooled(self.backbone(views["tiles"]), self.config.head_pool)  # (9B, F)
        per_tile = self.tile_layer(features).view(len(label), -1)  # (B, 9 * tile_features)
        logits = self.head(per_tile).float()  # (B, N)
        loss = F.cross_entropy(logits, label)
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}
