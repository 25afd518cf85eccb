"""The transitive-invariance graph over video patches (Wang, He & Gupta 2017, §3).

Nodes are the patches of a patch dataset (`selfsup video patches`). Edges:

- **inter-instance**: the pairs inside 4-cliques of the within-cluster neighbour graph of the
  patches' embeddings (see `mining`), whose neighbour lists hold other tracks only (or other
  videos), so every clique joins four different objects;
- **intra-instance**: an object and its view after tracking (A and A'): the first patch of a
  track with each of its patches at least `intra_min_gap` frames later (`intra=all`: every
  two patches of a track that far apart). Patches a few frames apart are near duplicates,
  which teach no invariance to viewpoint or pose;
- **transitive**: A ~ B (inter) and B ~ B' (intra) give A ~ B'; with A ~ A' (intra) also
  A' ~ B and A' ~ B'. These pairs carry both kinds of variation at once.

A pair appears once, under the first type it has in that order. The graph is an .npz holding
the pairs, their types, the cliques, the clusters, the patches' tracks and frames (for
`graph stats`), the parameters and a fingerprint of the patch dataset, so training refuses a
graph built for other patches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from selfsup.config import param
from selfsup.data.patch_graph import EDGE_TYPES, GRAPH_NAME, GraphError, PatchSet
from selfsup.graph.mining import cluster_and_search, four_cliques
from selfsup.outputs import output_file, save_npz


@dataclass
class GraphConfig:
    clusters: int = param(
        0,
        "k-means clusters; 0: round(sqrt(N)), which balances the k-means cost (N x C) against "
        "the within-cluster search (N x N / C).",
        low=0,
    )
    neighbours: int = param(
        10, "Nearest neighbours per patch within its cluster (paper: 10).", low=3
    )
    index: str = param(
        "ivfflat",
        "faiss index: ivfflat (exact within clusters) or ivfpq (compressed, for millions).",
        choices=("ivfflat", "ivfpq"),
    )
    backend: str = param(
        "auto", "auto (faiss when installed), faiss or torch.", choices=("auto", "faiss", "torch")
    )
    neighbours_from: str = param(
        "other_tracks",
        "Whose patches fill a patch's neighbour lists: `other_tracks` (its own track's patches "
        "are the same object, near duplicates, not another instance) or `other_videos` (also "
        "leaves out other objects of its video, which often look alike for reasons of scene, "
        "not category; patches of no video, video < 0, count as their own track; a plain "
        "image set is one video).",
        choices=("other_tracks", "other_videos"),
    )
    layer: str = param("", "Backbone layer embedded (globally pooled); empty: the final one.")
    intra: str = param(
        "first",
        "Intra-instance pairs: `first` links the first patch of each track to its views at "
        "least intra_min_gap frames later (the paper's A and A' after tracking); `all`: every "
        "two patches of a track at least intra_min_gap frames apart.",
        choices=("first", "all"),
    )
    intra_min_gap: int = param(
        15,
        "Frames (after `video patches --stride`) an intra pair spans at least. Tracks follow "
        "an object for at most 30 frames (video track.max_length) with a patch every 5, so 15 "
        "keeps the views of the track's second half; 0: any gap.",
        low=0,
    )
    seed: int = param(0, "Seed of the k-means initialisation.")


def intra_pairs(track: np.ndarray, frame: np.ndarray, rule: str, min_gap: int) -> np.ndarray:
    """(M, 2) patch ids of one track at least `min_gap` frames apart: with rule `first`, the
    track's first patch and each later one; with `all`, every two. Vectorised over patches
    (one sort, no loop per track: a plain image set has as many tracks as images)."""
    order = np.lexsort((frame, track))  # by track, then frame
    sorted_track = track[order]
    starts = np.flatnonzero(np.r_[True, sorted_track[1:] != sorted_track[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order))
    if rule == "first":
        a = np.repeat(starts, sizes)  # the first position of each position's track
        b = position
    else:
        later = np.repeat(starts + sizes, sizes) - position - 1  # patches after, same track
        a = np.repeat(position, later)
        b = a + 1 + np.arange(len(a)) - np.repeat(np.cumsum(later) - later, later)
    keep = (b != a) & (frame[order[b]] - frame[order[a]] >= min_gap)
    return np.stack([order[a[keep]], order[b[keep]]], 1).astype(np.int64)


def inter_pairs(cliques: np.ndarray, track: np.ndarray) -> np.ndarray:
    """The six pairs of every clique, minus those within one track (intra, not inter)."""
    rows = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    pairs = np.concatenate([cliques[:, [i, j]] for i, j in rows]) if len(cliques) else None
    if pairs is None:
        return np.zeros((0, 2), np.int64)
    return pairs[track[pairs[:, 0]] != track[pairs[:, 1]]]


def transitive_pairs(inter: np.ndarray, intra: np.ndarray, n: int) -> np.ndarray:
    """(A', B') for every inter pair (A, B), A' in A's intra neighbourhood plus A itself and
    B' likewise, without (A, B) itself."""
    linked: list[list[int]] = [[i] for i in range(n)]
    for a, b in intra:
        linked[a].append(b)
        linked[b].append(a)
    pairs = [(x, y) for a, b in inter for x in linked[a] for y in linked[b] if (x, y) != (a, b)]
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def merge_pairs(typed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Unordered, deduplicated pairs (i < j, no self pairs) with the first type each has,
    in the order they first appear."""
    pairs = np.concatenate([np.sort(group, axis=1) for group in typed])
    types = np.concatenate([np.full(len(g), kind, np.uint8) for kind, g in enumerate(typed)])
    distinct = pairs[:, 0] != pairs[:, 1]
    pairs, types = pairs[distinct], types[distinct]
    if not len(pairs):
        return pairs.reshape(0, 2), types
    _, first = np.unique(pairs, axis=0, return_index=True)
    first.sort()
    return pairs[first], types[first]


def embed(run: str, images: np.ndarray, layer: str, progress: bool = True) -> np.ndarray:
    """Globally pooled features of `layer` (final if empty) of a run's backbone."""
    import torch

    from selfsup.features import extract_features
    from selfsup.runs import load_backbone
    from selfsup.runtime import resolve_device

    loaded = load_backbone(run)
    layer = layer or loaded.backbone.layer_names[-1]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    size = max(tensor.shape[-1], loaded.backbone.min_input_size)
    if size != tensor.shape[-1]:
        tensor = (
            torch.nn.functional.interpolate(
                tensor.float(), size=size, mode="bilinear", antialias=False
            )
            .round()
            .clamp(0, 255)
            .byte()
        )
    features = extract_features(
        loaded.backbone,
        tensor,
        [layer],
        trunk_input=loaded.input,
        device=resolve_device("auto"),
        amp_dtype=None,
        max_dims=0,
        progress=progress,
        desc="embed patches",
    )
    return features[layer].float().numpy()


def neighbour_groups(patches: PatchSet, neighbours_from: str) -> np.ndarray:
    """(N,) the group each patch takes no neighbours from: its track, or its video (a patch
    of no video, video < 0, as the images of a mixed set, is a group of its own track)."""
    if neighbours_from == "other_tracks":
        return patches.track
    return np.where(patches.video >= 0, patches.video, -1 - patches.track)


def build_graph(patches: PatchSet, features: np.ndarray, cfg: GraphConfig) -> dict:
    """Every edge type, the cliques and clusters; the arrays `save_graph` writes."""
    if len(features) != len(patches.images):
        raise GraphError(f"{len(features)} embeddings for {len(patches.images)} patches")
    clusters = cfg.clusters or max(1, round(len(features) ** 0.5))
    groups = neighbour_groups(patches, cfg.neighbours_from)
    assign, neighbours = cluster_and_search(
        features, clusters, cfg.neighbours, cfg.seed, cfg.index, backend=cfg.backend, groups=groups
    )
    cliques = four_cliques(neighbours)
    intra = intra_pairs(patches.track, patches.frame, cfg.intra, cfg.intra_min_gap)
    inter = inter_pairs(cliques, patches.track)
    transitive = transitive_pairs(inter, intra, len(features))
    pairs, types = merge_pairs([inter, intra, transitive])
    return {
        "pairs": pairs,
        "pair_type": types,
        "edge_types": np.asarray(EDGE_TYPES),
        "cliques": cliques,
        "clusters": assign,
        "track": patches.track,
        "frame": patches.frame,
        "patches_fingerprint": np.asarray(patches.fingerprint()),
        "patches_path": np.asarray(str(patches.path.resolve())),
        "patch_count": np.asarray(len(features)),
        "params": np.asarray(json.dumps({**asdict(cfg), "clusters_used": clusters})),
    }


def save_graph(graph: dict, out: str | Path) -> Path:
    """Write the graph for `--out` (`g` -> `g.npz`, `folder/` -> `folder/graph.npz`; see
    selfsup.outputs); returns the path written."""
    path = output_file(out, GRAPH_NAME)
    save_npz(path, graph)
    return path


def graph_stats(graph: dict, labels: np.ndarray | None = None) -> dict:
    """Counts per edge type, cliques and clusters; with the patches' tracks and frames (in
    graphs built since they are saved) how many cliques join four tracks and the frame gaps
    of the intra pairs; with class labels, purity and label agreement."""
    counts = np.bincount(graph["pair_type"], minlength=len(EDGE_TYPES))
    stats = {
        "patches": int(graph["patch_count"]),
        "clusters": len(np.unique(graph["clusters"])),
        "cliques": len(graph["cliques"]),
        **{f"{name}_pairs": int(c) for name, c in zip(EDGE_TYPES, counts)},
    }
    if "track" in graph:
        stats["cliques_of_four_tracks"] = cliques_of_distinct_tracks(
            graph["cliques"], graph["track"]
        )
    if "frame" in graph:
        intra = graph["pairs"][graph["pair_type"] == EDGE_TYPES.index("intra")]
        stats["intra_frame_gap"] = gap_summary(np.abs(np.diff(graph["frame"][intra], axis=1)))
    stats["params"] = json.loads(str(graph["params"]))
    if labels is not None:
        stats["cluster_purity"] = cluster_purity(graph["clusters"], labels)
        pairs, types = graph["pairs"], graph["pair_type"]
        for kind, name in enumerate(EDGE_TYPES):
            chosen = pairs[types == kind]
            # Negative labels mark unlabelled patches (video patches beside labelled images).
            chosen = chosen[(labels[chosen] >= 0).all(axis=1)]
            if len(chosen):
                same = labels[chosen[:, 0]] == labels[chosen[:, 1]]
                stats[f"{name}_label_agreement"] = float(same.mean())
    return stats


def cliques_of_distinct_tracks(cliques: np.ndarray, track: np.ndarray) -> int:
    """How many cliques have their four patches on four different tracks."""
    if not len(cliques):
        return 0
    ordered = np.sort(track[cliques], axis=1)
    return int((np.diff(ordered, axis=1) != 0).all(axis=1).sum())


def gap_summary(gaps: np.ndarray) -> dict:
    """Min, median, mean and max of frame gaps (empty: {})."""
    if not gaps.size:
        return {}
    return {
        "min": int(gaps.min()),
        "median": float(np.median(gaps)),
        "mean": round(float(gaps.mean()), 2),
        "max": int(gaps.max()),
    }


def cluster_purity(assign: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled points (label >= 0) whose label is their cluster's majority label."""
    known = labels >= 0
    assign, labels = assign[known], labels[known]
    if not len(labels):
        return float("nan")
    majority = sum(np.bincount(labels[assign == c]).max() for c in np.unique(assign))
    return float(majority / len(labels))
