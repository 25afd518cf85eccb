"""Inter-instance edges: clusters, nearest neighbours inside clusters, 4-cliques.

Wang, He & Gupta (2017) link patches of different objects that look alike with a rule that
buys purity with recall: coarse k-means into C clusters, the k nearest neighbours of every
patch *within its cluster*, and only 4-cliques of the neighbour graph (four patches each of
which is in the other three's neighbour lists) become edges.

Neighbours come from other groups (tracks, or videos): a patch's own track-mates are near
duplicates of it, the same instance, so left in they fill up to half of its neighbour slots
and form cliques that are not inter-instance at all. They are left out of the lists before
the clique search, so every slot holds another instance.

faiss does the k-means and the search: an IVF index whose coarse quantiser is the k-means
centroids and which probes one list searches exactly within each point's own cluster, and
scales to millions of vectors (`index="ivfpq"` compresses the vectors for larger sets at some
recall). Without faiss a torch implementation serves small inputs.
"""

from __future__ import annotations

import numpy as np
import torch


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def normalise(features: np.ndarray) -> np.ndarray:
    features = np.ascontiguousarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def kmeans_torch(x: np.ndarray, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means on L2-normalised rows; returns (clusters, d) centroids."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(x)
    centroids = data[torch.randperm(len(data), generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        assign = (data @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=clusters)
        empty = counts == 0
        sums[empty] = centroids[empty]  # an empty cluster keeps its centroid
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids.numpy()


def cluster_and_search(
    features: np.ndarray,
    clusters: int,
    k: int,
    seed: int = 0,
    index: str = "ivfflat",
    iterations: int = 20,
    backend: str = "auto",
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of every row (N,), its k nearest neighbours within its cluster (N, k), -1
    where the cluster has fewer than k others). Cosine similarity on normalised rows.
    `groups` (N,) ints: neighbours come from other groups only (a patch's track, or video);
    None: from any other row."""
    x = normalise(features)
    clusters = max(1, min(clusters, len(x)))
    groups = np.arange(len(x)) if groups is None else np.asarray(groups, np.int64)
    use_faiss = backend == "faiss" or (backend == "auto" and have_faiss())
    if use_faiss:
        return _faiss_cluster_and_search(x, clusters, k, seed, index, iterations, groups)
    return _torch_cluster_and_search(x, clusters, k, seed, iterations, groups)


def _faiss_cluster_and_search(x, clusters, k, seed, index, iterations, groups):
    import faiss

    d = x.shape[1]
    # k-means trains on at most 256 points per centroid (faiss's subsampling); every point
    # is then assigned to its nearest centroid.
    kmeans = faiss.Kmeans(
        d,
        clusters,
        niter=iterations,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,
        max_points_per_centroid=256,
    )
    kmeans.train(x)
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(kmeans.centroids)
    if index == "ivfpq":
        subquantizers = next(m for m in (16, 8, 4, 2, 1) if d % m == 0)
        ivf = faiss.IndexIVFPQ(quantizer, d, clusters, subquantizers, 8, faiss.METRIC_INNER_PRODUCT)
        ivf.train(x)
    else:
        ivf = faiss.IndexIVFFlat(quantizer, d, clusters, faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True  # the quantiser is the k-means: nothing else to learn
    ivf.add(x)
    ivf.nprobe = 1  # search only the query's own cluster
    _, assign = quantizer.search(x, 1)

    def search(rows: np.ndarray, count: int) -> np.ndarray:
        return ivf.search(x[rows], count)[1]

    return assign[:, 0].astype(np.int64), search_other_groups(search, groups, k)


def search_other_groups(search, groups: np.ndarray, k: int) -> np.ndarray:
    """(N, k) nearest neighbours from other groups, -1 padded, from `search(rows, count)`,
    which gives the `count` nearest rows (-1 padded) to each of `rows`, nearest first.

    An index cannot leave a group out of its search, so ask for more than k and drop the
    query's own group; rows left short while their list was full (more candidates beyond it)
    ask again with twice as many. Each round is one vectorised search; a patch among few
    track-mates is done in the first."""
    neighbours = np.full((len(groups), k), -1, np.int64)
    rows, count = np.arange(len(groups)), 2 * (k + 1)
    while len(rows):
        found = search(rows, count)  # (r, count)
        kept = drop_same_group(found, groups, rows, k)
        neighbours[rows] = kept
        rows = rows[(kept < 0).any(1) & (found[:, -1] >= 0)]
        count *= 2
    return neighbours


def _torch_cluster_and_search(x, clusters, k, seed, iterations, groups):
    centroids = kmeans_torch(x, clusters, iterations, seed)
    assign = (x @ centroids.T).argmax(1).astype(np.int64)
    neighbours = np.full((len(x), k), -1, np.int64)
    for c in np.unique(assign):
        members = np.flatnonzero(assign == c)
        sims = torch.from_numpy(x[members] @ x[members].T)
        own = torch.from_numpy(groups[members])
        sims.masked_fill_(own[:, None] == own[None, :], float("-inf"))  # oneself included
        top = sims.topk(min(k, len(members)), dim=1)
        ids = np.where(torch.isfinite(top.values).numpy(), members[top.indices.numpy()], -1)
        neighbours[members, : ids.shape[1]] = ids
    return assign, neighbours


def drop_same_group(
    neighbours: np.ndarray, groups: np.ndarray, rows: np.ndarray, k: int
) -> np.ndarray:
    """The first k entries of each row's list (the neighbours of `rows`, -1 padded) that are
    not of the row's own group, which holds the row itself; -1 padded, similarity order kept."""
    listed = np.maximum(neighbours, 0)
    others = np.where((neighbours < 0) | (groups[listed] == groups[rows][:, None]), -1, neighbours)
    # stable: move -1 entries to the end, keep the similarity order of the rest
    order = np.argsort(others < 0, axis=1, kind="stable")
    kept = np.take_along_axis(others, order, axis=1)[:, :k]
    return np.pad(kept, ((0, 0), (0, k - kept.shape[1])), constant_values=-1)


def mutual_neighbours(neighbours: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """(N, k): neighbour j of node i where i is also in j's list, else -1."""
    mutual = np.full_like(neighbours, -1)
    for lo in range(0, len(neighbours), chunk):
        rows = neighbours[lo : lo + chunk]
        ids = np.arange(lo, lo + len(rows))[:, None, None]
        back = neighbours[np.maximum(rows, 0)]  # (n, k, k): the neighbours' own lists
        ok = (back == ids).any(-1) & (rows >= 0)
        mutual[lo : lo + chunk] = np.where(ok, rows, -1)
    return mutual


def _common(a_rows: np.ndarray, b_rows: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Row-wise intersection of two -1-padded id lists, keeping ids > `above`; -1 padded."""
    hit = (a_rows[:, :, None] == b_rows[:, None, :]).any(-1) & (a_rows > above[:, None])
    return np.where(hit & (a_rows >= 0), a_rows, -1)


def four_cliques(neighbours: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """All 4-cliques of the neighbour graph where an edge needs both ends to list each other:
    (M, 4) node ids a < b < c < d, rows in lexicographic order. Vectorised over edges in
    chunks: O(N k^3) comparisons, O(chunk k^2) memory."""
    mutual = mutual_neighbours(neighbours)
    a, slot = np.nonzero(mutual > np.arange(len(mutual))[:, None])  # edges a < b
    b = mutual[a, slot]
    found = []
    for lo in range(0, len(a), chunk):
        ea, eb = a[lo : lo + chunk], b[lo : lo + chunk]
        common = _common(mutual[ea], mutual[eb], eb)  # c > b adjacent to both
        edge, col = np.nonzero(common >= 0)
        ta, tb, tc = ea[edge], eb[edge], common[edge, col]
        fourth = _common(common[edge], mutual[tc], tc)  # d > c adjacent to a, b and c
        tri, dcol = np.nonzero(fourth >= 0)
        found.append(np.stack([ta[tri], tb[tri], tc[tri], fourth[tri, dcol]], 1))
    cliques = np.concatenate(found) if found else np.zeros((0, 4), np.int64)
    return cliques[np.lexsort(cliques.T[::-1])] if len(cliques) else cliques.reshape(0, 4)
