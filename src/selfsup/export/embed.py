"""Features of a user's own images: average-pooled maps of one layer, written to an .npz.

Images are decoded and fitted exactly as for training and evaluation (shorter side to the
size, centre crop) in DataLoader workers, one batch at a time, so a folder of any size streams
through in bounded memory. Unreadable images are skipped and listed rather than ending a long
run half-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from selfsup.backbones import Backbone
from selfsup.data import BadImageError, DataFormatError, ImageSource, open_source
from selfsup.data.decode import fit_to_square
from selfsup.data.selections import ConcatSource, FileListSource
from selfsup.data.sources import IMAGE_SUFFIXES
from selfsup.data.trunk_input import TrunkInput
from selfsup.data.worker_errors import load_batches
from selfsup.features import pooled_grid


def open_images(paths: list[str]) -> ImageSource:
    """Folders and .npz files as datasets, other paths as image files, all read as one, in
    the order given."""
    sources: list[ImageSource] = []
    files: list[Path] = []  # consecutive image files, read as one source
    for raw in paths:
        path = Path(raw)
        if path.is_dir() or path.suffix.lower() == ".npz":
            if files:
                sources.append(FileListSource(files))
                files = []
            sources.append(open_source(path))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if not path.is_file():
                raise DataFormatError(f"{path}: does not exist")
            files.append(path)
        else:
            raise DataFormatError(
                f"{path}: not a folder, an .npz or an image file ({', '.join(IMAGE_SUFFIXES)})"
            )
    if files:
        sources.append(FileListSource(files))
    return sources[0] if len(sources) == 1 else ConcatSource(sources)


class FittedOrNone(Dataset):
    """source[i] -> (i, (3, S, S) uint8, or None for an image that cannot be decoded)."""

    def __init__(self, source: ImageSource, size: int):
        self.source, self.size = source, size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        try:
            array = self.source.load(index, min_size=self.size)
            return index, fit_to_square(array, self.size, self.source.name(index))
        except BadImageError:
            return index, None


def _collate(items: list) -> list:
    return items


@dataclass
class Embeddings:
    features: np.ndarray  # (N, D) float32
    names: list[str]  # (N,) the image each row comes from
    layer: str
    skipped: list[str]  # images that could not be decoded


@torch.no_grad()
def embed_source(
    backbone: Backbone,
    source: ImageSource,
    *,
    layer: str,
    size: int,
    trunk_input: TrunkInput,
    batch_size: int = 64,
    max_dims: int = 0,
    workers: int = 2,
    device: torch.device | None = None,
    progress: bool = True,
) -> Embeddings:
    """Pooled `layer` features of every image of `source`, in source order.

    `max_dims=0`: global average pooling (one value per channel, what kNN reads); larger
    values keep a small spatial grid as the linear probes do (see `selfsup.features`).
    """
    device = device or torch.device("cpu")
    backbone.eval().to(device)
    channels, height, _ = backbone.feature_shapes(size)[layer]
    grid = pooled_grid(channels, height, max_dims)
    batches = load_batches(
        FittedOrNone(source, size), batch_size=batch_size, num_workers=workers, collate_fn=_collate
    )
    features, names, skipped = [], [], []
    with tqdm(total=len(source), desc="embed", unit="img", disable=not progress) as bar:
        for items in batches:
            kept = [(i, image) for i, image in items if image is not None]
            skipped += [source.name(i) for i, image in items if image is None]
            bar.update(len(items))
            if not kept:
                continue
            batch = torch.stack([image for _, image in kept]).to(device)  # (B, 3, S, S) uint8
            x = trunk_input.prepare(batch)
            fmap = backbone.forward_layers(x, [layer])[layer].float()  # (B, C, h, w)
            features.append(F.adaptive_avg_pool2d(fmap, grid).flatten(1).cpu())  # (B, D)
            names += [source.name(i) for i, _ in kept]
    if not features:
        parts = source.sources if isinstance(source, ConcatSource) else [source]
        where = ", ".join(str(part.path) for part in parts)
        raise DataFormatError(f"{where}: none of the {len(source)} images could be decoded")
    return Embeddings(torch.cat(features).numpy(), names, layer, skipped)


def save_embeddings(embeddings: Embeddings, out: str | Path) -> Path:
    """Write `features`, `names`, `layer` (and `skipped`) to an .npz readable without pickle."""
    out = Path(out)
    if out.suffix != ".npz":  # np.savez would append it; return the name actually written
        out = out.with_name(out.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        features=embeddings.features,
        names=np.array(embeddings.names, dtype=str),
        layer=np.array(embeddings.layer),
        skipped=np.array(embeddings.skipped, dtype=str),
    )
    return out
