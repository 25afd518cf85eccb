"""A 2-D map of the features: t-SNE when scikit-learn is installed, else PCA.

t-SNE keeps neighbourhoods (clusters show up) but distorts distances; PCA keeps the two
directions of largest variance, which is linear and fast but rarely separates classes well.
The report says which one it drew.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import torch

from selfsup.analysis.page import Section

MAX_LEGEND_CLASSES = 20  # more classes: a colour bar instead of a legend
TSNE_INPUT_DIMS = 50  # PCA first, the usual speed-up for t-SNE on wide features


def pca(features: torch.Tensor, dims: int) -> torch.Tensor:
    """(N, D) -> (N, min(dims, N, D)) projections on the top principal components."""
    centred = features.float() - features.float().mean(dim=0)
    dims = min(dims, *centred.shape)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)  # rows: directions
    return centred @ components[:dims].T


def project_2d(features: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(N, D) -> ((N, 2) coordinates, "t-SNE" or "PCA")."""
    try:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return pca(features, 2), "PCA"
    if len(features) < 8:  # t-SNE needs perplexity < N
        return pca(features, 2), "PCA"
    reduced = pca(features, TSNE_INPUT_DIMS).numpy()
    perplexity = min(30.0, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    # Use the threads torch is allowed: OpenMP's default (every core) spin-waits when the
    # CPU is shared, measured 40x slower than one thread on a busy 2-core machine.
    with threadpool_limits(torch.get_num_threads()):
        points = tsne.fit_transform(reduced)
    return torch.from_numpy(points), "t-SNE"


def plot_map(
    points: torch.Tensor, labels: torch.Tensor | None, class_names: list[str] | None, path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    xs, ys = points[:, 0].numpy(), points[:, 1].numpy()
    if labels is None:
        ax.scatter(xs, ys, s=6, alpha=0.7)
    elif int(labels.max()) < MAX_LEGEND_CLASSES:
        # One scatter per class: exact colours and a legend with the class names.
        names = class_names or [str(c) for c in range(int(labels.max()) + 1)]
        cmap = plt.get_cmap("tab10" if int(labels.max()) < 10 else "tab20")
        for c in sorted(set(labels.tolist())):
            mask = (labels == c).numpy()
            ax.scatter(xs[mask], ys[mask], s=6, alpha=0.8, color=cmap(c), label=names[c])
        ax.legend(fontsize=7, markerscale=2)
    else:
        dots = ax.scatter(xs, ys, c=labels.numpy(), s=6, alpha=0.8, cmap="viridis")
        fig.colorbar(dots, ax=ax, label="label")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def map_section(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    class_names: list[str] | None,
    out_dir: Path,
) -> Section:
    section = Section("map", "Feature map")
    if len(features) < 3:
        return section.text("Too few images for a map.", note=True)
    points, method = project_2d(features)
    plot_map(points, labels, class_names, out_dir / "map.png")
    coloured = "coloured by label" if labels is not None else "(the data has no labels)"
    section.figure(
        "map.png", f"{method} of the final-layer features of {len(features)} images, {coloured}."
    )
    if method == "PCA":
        section.text("PCA: install scikit-learn for a t-SNE map.", note=True)
    return section
