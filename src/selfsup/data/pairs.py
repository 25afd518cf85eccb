"""The anchor-positive pairs of a patch graph, step by step: the data of transitive invariance.

The patches and the graph over them are read once. Each batch mixes the three pair types
(inter, intra, transitive) in fixed shares: from the shares asked for, every step takes the
same number of pairs of each type (largest remainders), so the mix is what was set at every
step, not only on average. Transitive pairs outnumber the others by far (dozens per inter
pair), so drawing from the merged list would make them nearly the whole batch.

Each type is ordered like images (`selfsup.data.order`): a seeded permutation per epoch of that
type, sliced by step and rank, so the pairs of step t are fixed by the seed, a resumed run
continues with the pairs it would have met, and the ranks of a distributed run share none.
Either end of a pair may be the anchor: a coin per pair, seeded by (seed, step, rank).

A batch is the 2B patches of its B pairs, anchors first, with their track ids, their pair
types and which of them the graph connects (by a pair of any type). Those three stay on the
host: the task decides from them which patches may be negatives without waiting for the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from selfsup.data.loader import decoded_gib
from selfsup.data.order import EpochOrder
from selfsup.data.patch_graph import EDGE_TYPES, GraphError, load_graph, load_patches


def type_counts(weights: Sequence[float], batch: int) -> list[int]:
    """Pairs of each type in a batch of `batch` pairs: `batch` split in proportion to
    `weights` (not all zero), rounded by largest remainders, ties to the earlier type:
    weights [1, 1, 1] split 64 pairs [22, 21, 21]."""
    total = float(sum(weights))
    exact = [batch * w / total for w in weights]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda t: counts[t] - exact[t])
    for t in by_remainder[: batch - sum(counts)]:
        counts[t] += 1
    return counts


def pair_keys(pairs: torch.Tensor, n: int) -> torch.Tensor:
    """One int64 key per unordered pair, min * n + max: (..., 2) ids -> (...) keys."""
    return torch.minimum(pairs[..., 0], pairs[..., 1]) * n + torch.maximum(
        pairs[..., 0], pairs[..., 1]
    )


def connected_mask(ids: torch.Tensor, keys: torch.Tensor, n: int) -> torch.Tensor:
    """(K,) patch ids -> (K, K) bool: whether the graph holds the pair (ids[i], ids[j]).
    `keys` are the graph's pair keys (`pair_keys`), sorted; one vectorised binary search."""
    grid = torch.stack(torch.broadcast_tensors(ids[:, None], ids[None, :]), -1)  # (K, K, 2)
    query = pair_keys(grid, n)
    if not len(keys):
        return torch.zeros_like(query, dtype=torch.bool)
    found = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
    return keys[found] == query


class PairStream:
    """Step-indexed batches of (2B, 3, P, P) uint8 patches (anchors, then their positives),
    with their (2B,) int64 track ids, (B,) pair types (indices into EDGE_TYPES) and the
    (2B, 2B) bool mask of the graph's pairs among them, from a graph built by
    `selfsup graph build` over a patch set.

    `shares`: relative weights of inter, intra and transitive pairs in a batch; a type the
    graph has no pairs of gets none (`describe` says so)."""

    def __init__(
        self,
        patches: str | Path,
        graph: str | Path,
        *,
        shares: Sequence[float] = (1.0, 1.0, 1.0),
        pairs_per_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        device_cache_max_gb: float = 8.0,
    ):
        patch_set = load_patches(patches)
        self.graph_path = Path(graph)
        loaded = load_graph(graph, patch_set)
        self.device, self.seed, self.rank = torch.device(device), seed, rank
        images = torch.from_numpy(patch_set.images).permute(0, 3, 1, 2).contiguous()
        fits = decoded_gib(len(images), images.shape[-1]) <= device_cache_max_gb
        self.mode = "device" if self.device.type == "cuda" and fits else "memory"
        self.images = images.to(self.device) if self.mode == "device" else images
        self.tracks = torch.from_numpy(patch_set.track)
        self.patch_file = patch_set.path
        every = torch.from_numpy(np.ascontiguousarray(loaded["pairs"], dtype=np.int64))
        # Every pair of the graph, whatever the types trained on: what negatives must avoid.
        self.keys = pair_keys(every, len(images)).unique()  # sorted
        types = torch.from_numpy(np.asarray(loaded["pair_type"], dtype=np.int64))
        self.by_type = [every[types == t] for t in range(len(EDGE_TYPES))]  # (M_t, 2) each
        self.shares = tuple(float(s) for s in shares)
        weights = [s if len(p) else 0.0 for s, p in zip(self.shares, self.by_type)]
        if not any(weights):
            asked = ", ".join(n for n, s in zip(EDGE_TYPES, self.shares) if s > 0)
            raise GraphError(f"{graph}: the graph has no {asked} pairs")
        self.counts = type_counts(weights, pairs_per_batch)  # pairs of each type per batch
        # (B,) the type of each pair of a batch: the same every step
        self.pair_types = torch.repeat_interleave(
            torch.arange(len(EDGE_TYPES)), torch.tensor(self.counts)
        )
        self.orders = {
            t: self.type_order(t, graph, pairs_per_batch, world_size)
            for t, count in enumerate(self.counts)
            if count
        }
        # One epoch: every pair of every type trained on met at least once.
        self.steps_per_epoch = max(order.steps_per_epoch for order in self.orders.values())

    def type_order(self, kind: int, graph, pairs_per_batch: int, world_size: int) -> EpochOrder:
        count, name = self.counts[kind], EDGE_TYPES[kind]
        # A seed per type: two types with as many pairs would otherwise share one order.
        order = EpochOrder(
            len(self.by_type[kind]),
            count,
            seed=self.seed * len(EDGE_TYPES) + kind,
            rank=self.rank,
            world_size=world_size,
        )
        if order.steps_per_epoch == 0:
            raise GraphError(
                f"{graph}: {len(self.by_type[kind])} {name} pairs is fewer than one global "
                f"batch's share of them ({count} pairs x {world_size} processes); lower "
                f"transitive.pairs_per_batch or the {name} share (transitive.pair_shares)"
            )
        return order

    def patch_ids(self, step: int) -> torch.Tensor:
        """(2B,) host patch ids of this rank's batch at `step`: anchors, then positives; the
        pairs grouped by type as in `pair_types`."""
        pairs = torch.cat(
            [self.by_type[t][order.rows(step)] for t, order in self.orders.items()]
        )  # (B, 2)
        coins = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 4099 + self.rank)
        swap = torch.rand(len(pairs), generator=coins) < 0.5
        pairs = torch.where(swap[:, None], pairs.flip(1), pairs)
        return pairs.T.reshape(-1)

    def connected(self, ids: torch.Tensor) -> torch.Tensor:
        """(2B,) patch ids -> (2B, 2B) bool: which of them the graph pairs, by any type."""
        return connected_mask(ids, self.keys, len(self.images))

    def batches(self, start_step: int = 0) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Yield (step, {"patches": on the training device; "tracks", "pair_types",
        "connected": on the host})."""
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
            yield (
                step,
                {
                    "patches": patches,
                    "tracks": self.tracks[ids],
                    "pair_types": self.pair_types,
                    "connected": self.connected(ids),
                },
            )
            step += 1

    def describe(self) -> str:
        side = self.images.shape[-1]
        where = f" on {self.device}" if self.mode == "device" else ""
        mix = ", ".join(
            f"{count} {name} (of {len(pairs)})"
            for name, count, pairs in zip(EDGE_TYPES, self.counts, self.by_type)
        )
        missing = [
            name for name, s, p in zip(EDGE_TYPES, self.shares, self.by_type) if s and not len(p)
        ]
        lacking = f"; the graph has no {', '.join(missing)} pairs" if missing else ""
        return (
            f"graph {self.graph_path}: pairs per batch {mix}{lacking}, over {len(self.images)} "
            f"patches of {side} px ({self.patch_file}), {self.mode} mode{where}, "
            f"{self.steps_per_epoch} steps/epoch"
        )
