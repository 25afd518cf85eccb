"""The transitive-invariance graph over video patches (Wang, He & Gupta 2017, §3).

Nodes are the patches of a patch dataset (`selfsup video patches`). Edges:

- **inter-instance**: the pairs inside 4-cliques of the within-cluster neighbour graph of the
  patches' embeddings (see `mining`), between different tracks;
- **intra-instance**: pairs of patches of one track (one object seen at different times),
  at most `intra_max_gap` frames apart (0: any two of the track);
- **transitive**: A ~ B (inter) and B ~ B' (intra) give A ~ B'; with A ~ A' (intra) also
  A' ~ B and A' ~ B'. These pairs carry both kinds of variation at once.

A pair appears once, under the first type it has in that order. The graph is an .npz holding
the pairs, their types, the cliques, the clusters, the parameters and a fingerprint of the
patch dataset, so training refuses a graph built for other patches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from selfsup.config import param
from selfsup.graph.mining import cluster_and_search, four_cliques
from selfsup.outputs import input_file, output_file

EDGE_TYPES = ("inter", "intra", "transitive")
GRAPH_NAME = "graph.npz"  # the graph's name inside a folder given as --out
PATCHES_NAME = "patches.npz"  # what `selfsup video patches` writes into its folder
GRAPH_KEYS = {"pairs", "pair_type", "cliques", "clusters", "patches_fingerprint", "patch_count"}


class GraphError(ValueError):
    """A graph or patch file is unusable; the message names it and why."""


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
    layer: str = param("", "Backbone layer embedded (globally pooled); empty: the final one.")
    intra_max_gap: int = param(0, "Intra pairs at most this many frames apart; 0: any.", low=0)
    seed: int = param(0, "Seed of the k-means initialisation.")


@dataclass
class PatchSet:
    images: np.ndarray  # (N, P, P, 3) uint8
    track: np.ndarray  # (N,) track id; an image without a track is its own track
    frame: np.ndarray  # (N,) frame index (0 without video)
    video: np.ndarray  # (N,)
    path: Path
    labels: np.ndarray | None = None  # class labels, when the file has them (for purity)

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=12)
        for array in (self.track, self.frame, self.video):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(str(self.images.shape).encode())
        digest.update(
            np.ascontiguousarray(self.images[:: max(1, len(self.images) // 64)]).tobytes()
        )
        return digest.hexdigest()


def load_patches(path: str | Path) -> PatchSet:
    """A patch dataset (`patches.npz` or the `selfsup video patches` folder holding it). Plain
    image .npz files (`images` only, e.g. CIFAR decoded) load too, each image its own track.
    Optional class labels (`labels`, or `patch_labels` with -1 for unknown) give `graph stats`
    its purity figures."""
    file = input_file(path, PATCHES_NAME)
    if not file.is_file():
        raise GraphError(
            f"{file}: no patch dataset there (expected the folder `selfsup video patches` "
            f"wrote, or the {PATCHES_NAME} in it)"
        )
    with open_npz(file, "a patch dataset (`selfsup video patches`)") as data:
        if "images" not in data:
            raise GraphError(f"{file}: no `images` array; keys are {', '.join(data.files)}")
        images = data["images"]
        n = len(images)
        track = data["track"] if "track" in data else np.arange(n)
        frame = data["frame"] if "frame" in data else np.zeros(n, np.int64)
        video = data["video"] if "video" in data else np.zeros(n, np.int64)
        # `patch_labels` (-1: unknown) serves mixed sets, e.g. video patches beside labelled
        # images, whose `labels` the image loaders would refuse; only statistics read them.
        key = next((k for k in ("labels", "patch_labels") if k in data), None)
        labels = data[key].astype(np.int64) if key else None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise GraphError(
            f"{file}: `images` must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}"
        )
    return PatchSet(
        images, track.astype(np.int64), frame.astype(np.int64), video.astype(np.int64), file, labels
    )


def tracks_of(track: np.ndarray) -> list[np.ndarray]:
    """Members of every track with more than one patch (grouped by one sort, not a scan per
    track: a plain image set has as many tracks as images)."""
    order = np.argsort(track, kind="stable")
    _ids, starts, counts = np.unique(track[order], return_index=True, return_counts=True)
    return [order[s : s + c] for s, c in zip(starts, counts) if c > 1]


def intra_pairs(patches: PatchSet, max_gap: int) -> np.ndarray:
    pairs = []
    for members in tracks_of(patches.track):
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if max_gap == 0 or abs(patches.frame[b] - patches.frame[a]) <= max_gap:
                    pairs.append((a, b))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


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

    from selfsup.eval.features import extract_features
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
        device=resolve_device("auto"),
        amp_dtype=None,
        max_dims=0,
        progress=progress,
        desc="embed patches",
    )
    return features[layer].float().numpy()


def build_graph(patches: PatchSet, features: np.ndarray, cfg: GraphConfig) -> dict:
    """Every edge type, the cliques and clusters; the arrays `save_graph` writes."""
    if len(features) != len(patches.images):
        raise GraphError(f"{len(features)} embeddings for {len(patches.images)} patches")
    clusters = cfg.clusters or max(1, round(len(features) ** 0.5))
    assign, neighbours = cluster_and_search(
        features, clusters, cfg.neighbours, cfg.seed, cfg.index, backend=cfg.backend
    )
    cliques = four_cliques(neighbours)
    intra = intra_pairs(patches, cfg.intra_max_gap)
    inter = inter_pairs(cliques, patches.track)
    transitive = transitive_pairs(inter, intra, len(features))
    pairs, types = merge_pairs([inter, intra, transitive])
    return {
        "pairs": pairs,
        "pair_type": types,
        "edge_types": np.asarray(EDGE_TYPES),
        "cliques": cliques,
        "clusters": assign,
        "patches_fingerprint": np.asarray(patches.fingerprint()),
        "patches_path": np.asarray(str(patches.path.resolve())),
        "patch_count": np.asarray(len(features)),
        "params": np.asarray(json.dumps({**asdict(cfg), "clusters_used": clusters})),
    }


def save_graph(graph: dict, out: str | Path) -> Path:
    """Write the graph for `--out` (`g` -> `g.npz`, `folder/` -> `folder/graph.npz`; see
    selfsup.outputs); returns the path written."""
    path = output_file(out, GRAPH_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **graph)
    tmp.replace(path)
    return path


def open_npz(file: Path, what: str):
    """np.load of an .npz, or GraphError naming the file and what it should have been."""
    try:
        return np.load(file)
    except (OSError, ValueError) as err:  # not a zip archive, or not numpy's
        raise GraphError(f"{file}: not {what}; it cannot be read as an .npz ({err})") from err


def find_graph(path: str | Path) -> Path | None:
    """The graph file `path` names (see selfsup.outputs), or None when it names no graph."""
    file = input_file(path, GRAPH_NAME)
    if not file.is_file():
        return None
    try:
        with np.load(file) as data:
            return file if set(data.files) >= GRAPH_KEYS else None
    except (OSError, ValueError):
        return None


def load_graph(path: str | Path, patches: PatchSet | None = None) -> dict:
    """A saved graph; with `patches`, check it was built for them."""
    file = input_file(path, GRAPH_NAME)
    if not file.is_file():
        raise GraphError(
            f"{path}: no graph there (expected a graph file written by `selfsup graph build`, "
            f"or a folder holding {GRAPH_NAME})"
        )
    with open_npz(file, "a graph file (written by `selfsup graph build`)") as data:
        if not set(data.files) >= GRAPH_KEYS:
            raise GraphError(
                f"{file}: not a graph file (written by `selfsup graph build`); it holds "
                f"{', '.join(data.files) or 'no arrays'}"
            )
        graph = {key: data[key] for key in data.files}
    if patches is not None and str(graph["patches_fingerprint"]) != patches.fingerprint():
        raise GraphError(
            f"{file} was built for other patches than {patches.path} ({int(graph['patch_count'])}"
            f" patches then, {len(patches.images)} now, or different content); rebuild it"
        )
    return graph


def graph_stats(graph: dict, labels: np.ndarray | None = None) -> dict:
    counts = np.bincount(graph["pair_type"], minlength=len(EDGE_TYPES))
    stats = {
        "patches": int(graph["patch_count"]),
        "clusters": len(np.unique(graph["clusters"])),
        "cliques": len(graph["cliques"]),
        **{f"{name}_pairs": int(c) for name, c in zip(EDGE_TYPES, counts)},
        "params": json.loads(str(graph["params"])),
    }
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


def cluster_purity(assign: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled points (label >= 0) whose label is their cluster's majority label."""
    known = labels >= 0
    assign, labels = assign[known], labels[known]
    if not len(labels):
        return float("nan")
    majority = sum(np.bincount(labels[assign == c]).max() for c in np.unique(assign))
    return float(majority / len(labels))
