"""Image grids to judge a graph by eye: sample cliques (four patches per row) and transitive
chains (A, B, B': A ~ B inter-instance, B ~ B' by tracking)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.patch_graph import PatchSet


def grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    size = rows[0][0].shape[0]
    width = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (size + gap), width * (size + gap), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, patch in enumerate(row):
            y, x = i * (size + gap), j * (size + gap)
            canvas[y : y + size, x : x + size] = patch
    return canvas


def chains(graph: dict, limit: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(A, B, B') triples: inter pair (A, B) and an intra partner B' of B."""
    pairs, types = graph["pairs"], graph["pair_type"]
    intra = pairs[types == 1]
    partners: dict[int, list[int]] = {}
    for a, b in intra:
        partners.setdefault(int(a), []).append(int(b))
        partners.setdefault(int(b), []).append(int(a))
    found = []
    inter = pairs[types == 0]
    for i in rng.permutation(len(inter)):
        for a, b in (inter[i], inter[i][::-1]):
            if int(b) in partners:
                found.append((int(a), int(b), partners[int(b)][-1]))
                break
        if len(found) >= limit:
            break
    return found


def save_previews(graph: dict, patches: PatchSet, out: Path, rows: int = 12) -> list[Path]:
    """cliques.jpg and chains.jpg in `out` (where there is something to show)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = []
    cliques = graph["cliques"]
    if len(cliques):
        picked = cliques[rng.permutation(len(cliques))[:rows]]
        path = out / "cliques.jpg"
        Image.fromarray(grid([[patches.images[i] for i in c] for c in picked])).save(path)
        written.append(path)
    triples = chains(graph, rows, rng)
    if triples:
        path = out / "chains.jpg"
        Image.fromarray(grid([[patches.images[i] for i in t] for t in triples])).save(path)
        written.append(path)
    return written
