"""Nearest-neighbour retrieval: which images the representation puts closest to a query.

Similarity is the cosine of globally average-pooled final-layer features (what the kNN
protocol reads). With labels, the share of the k neighbours that have the query's label,
over every image as a query, says in one number how semantic the neighbourhoods are; chance
is the probability that two random images share a label.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.analysis.grids import OTHER, QUERY, SAME, save_grid
from selfsup.analysis.page import Section

BLOCK = 1024  # query rows per similarity block: bounds memory at BLOCK x N floats


def nearest_neighbours(features: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """(N, D) features, (Q,) query rows -> (Q, k) rows of the most cosine-similar other
    images (a query is never its own neighbour)."""
    unit = F.normalize(features.float(), dim=1)
    out = []
    for start in range(0, len(queries), BLOCK):
        rows = queries[start : start + BLOCK]
        similarity = unit[rows] @ unit.T  # (q, N)
        similarity[torch.arange(len(rows)), rows] = -float("inf")
        out.append(similarity.topk(k, dim=1).indices)
    return torch.cat(out)


def label_agreement(features: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[float, float]:
    """(share of neighbours with the query's label over all queries, chance level)."""
    neighbours = nearest_neighbours(features, torch.arange(len(features)), k)  # (N, k)
    agreement = (labels[neighbours] == labels[:, None]).float().mean().item()
    frequencies = torch.bincount(labels).float() / len(labels)
    return agreement, frequencies.pow(2).sum().item()


def retrieval_section(
    features: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    out_dir: Path,
    queries: int = 8,
    k: int = 8,
) -> Section:
    """Grid of `queries` evenly spaced queries (first column) and their top-k neighbours."""
    section = Section("retrieval", "Nearest neighbours")
    k = min(k, len(features) - 1)
    if k < 1:
        return section.text("Too few images for retrieval.", note=True)
    rows = torch.linspace(0, len(features) - 1, min(queries, len(features))).long()
    neighbours = nearest_neighbours(features, rows, k)  # (Q, k)
    grid = [torch.cat([images[q : q + 1], images[n]]) for q, n in zip(rows, neighbours)]
    frames = None
    if labels is not None:
        frames = [
            [QUERY] + [SAME if labels[i] == labels[q] else OTHER for i in n]
            for q, n in zip(rows, neighbours)
        ]
    save_grid(grid, out_dir / "retrieval.png", frames)
    caption = (
        f"Each row: a query (first column) and its {k} nearest neighbours by cosine similarity."
    )
    if labels is not None:
        caption += " Green frame: same label as the query; red: another label."
    section.figure("retrieval.png", caption)
    if labels is not None:
        agreement, chance = label_agreement(features, labels, k)
        section.table(
            ["neighbours with the query's label (all images as queries)", "chance"],
            [[f"{100 * agreement:.1f}%", f"{100 * chance:.1f}%"]],
        )
    return section
