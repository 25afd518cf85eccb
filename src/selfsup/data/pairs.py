"""The anchor-positive pairs of a patch graph, step by step: the data of transitive invariance.

The patches and the graph over them are read once. Pairs are ordered like images
(`selfsup.data.order`): a seeded permutation per epoch, sliced by step and rank, so the pairs of
step t are fixed by the seed, a resumed run continues with the pairs it would have met, and the
ranks of a distributed run share none. Either end of a pair may be the anchor: a coin per pair,
seeded by (seed, step, rank).

A batch is the 2B patches of its B pairs, anchors first, with their track ids. The track ids
stay on the host: the task decides from them which patches may be negatives without waiting
for the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from selfsup.data.loader import decoded_gib
from selfsup.data.order import EpochOrder
from selfsup.data.patch_graph import EDGE_TYPES, GraphError, load_graph, load_patches


def pairs_of_type(graph: dict, edges: str) -> np.ndarray:
    """(M, 2) patch ids of the graph's pairs of type `edges` (`transitive`: every pair)."""
    if edges == "transitive":
        return graph["pairs"]
    return graph["pairs"][graph["pair_type"] == EDGE_TYPES.index(edges)]


class PairStream:
    """Step-indexed batches of (2B, 3, P, P) uint8 patches (anchors, then their positives) and
    (2B,) int64 track ids, from a graph built by `selfsup graph build` over a patch set."""

    def __init__(
        self,
        patches: str | Path,
        graph: str | Path,
        *,
        edges: str = "transitive",
        pairs_per_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        device_cache_max_gb: float = 8.0,
    ):
        patch_set = load_patches(patches)
        self.graph_path = Path(graph)
        pairs = pairs_of_type(load_graph(graph, patch_set), edges)
        if len(pairs) == 0:
            raise GraphError(f"{graph}: the graph has no {edges} pairs")
        self.edges, self.device = edges, torch.device(device)
        self.seed, self.rank = seed, rank
        images = torch.from_numpy(patch_set.images).permute(0, 3, 1, 2).contiguous()
        fits = decoded_gib(len(images), images.shape[-1]) <= device_cache_max_gb
        self.mode = "device" if self.device.type == "cuda" and fits else "memory"
        self.images = images.to(self.device) if self.mode == "device" else images
        self.tracks = torch.from_numpy(patch_set.track)
        self.pairs = torch.from_numpy(np.ascontiguousarray(pairs, dtype=np.int64))  # (M, 2)
        self.patch_file = patch_set.path
        self.order = EpochOrder(
            len(self.pairs), pairs_per_batch, seed=seed, rank=rank, world_size=world_size
        )
        self.steps_per_epoch = self.order.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise GraphError(
                f"{graph}: {len(self.pairs)} {edges} pairs is fewer than one global batch "
                f"({pairs_per_batch} pairs x {world_size} processes); lower "
                "transitive.pairs_per_batch"
            )

    def patch_ids(self, step: int) -> torch.Tensor:
        """(2B,) host patch ids of this rank's batch at `step`: anchors, then positives."""
        pairs = self.pairs[self.order.rows(step)]  # (B, 2)
        coins = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 4099 + self.rank)
        swap = torch.rand(len(pairs), generator=coins) < 0.5
        pairs = torch.where(swap[:, None], pairs.flip(1), pairs)
        return pairs.T.reshape(-1)

    def batches(self, start_step: int = 0) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield (step, {"patches": on the training device, "tracks": on the host})."""
        step = start_step
        while True:
            ids = self.patch_ids(step)
            if self.mode == "device":
                patches = self.images[ids.to(self.device, non_blocking=True)]
            else:
                patches = self.images[ids]
                if self.device.type == "cuda":
                    patches = patches.pin_memory()
                patches = patches.to(self.device, non_blocking=True)
            yield step, {"patches": patches, "tracks": self.tracks[ids]}
            step += 1

    def describe(self) -> str:
        side = self.images.shape[-1]
        where = f" on {self.device}" if self.mode == "device" else ""
        return (
            f"graph {self.graph_path}: {len(self.pairs)} {self.edges} pairs over "
            f"{len(self.images)} patches of {side} px ({self.patch_file}), {self.mode} mode"
            f"{where}, {self.steps_per_epoch} steps/epoch"
        )
