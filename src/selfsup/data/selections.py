"""Sources built from other sources or from a list of files, for inspecting and embedding.

Training reads one dataset path; the analysis commands also need a bounded sample of a dataset
(`SubsetSource`), the image files a user names one by one (`FileListSource`) and several of
these read as one (`ConcatSource`). All keep the `ImageSource` interface, so the loader decodes
them exactly as it decodes training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selfsup.data.sources import DataFormatError, FilesSource, ImageSource


class SubsetSource(ImageSource):
    """The images of `source` at `indices` (labels and decoded arrays follow along)."""

    def __init__(self, source: ImageSource, indices: Sequence[int]):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.path = source.path
        self.class_names = source.class_names
        self.labels = None if source.labels is None else source.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.source.name(int(self.indices[index]))

    def load(self, index: int, min_size: int | None = None) -> np.ndarray:
        return self.source.load(int(self.indices[index]), min_size)

    def decoded_array(self) -> np.ndarray | None:
        array = self.source.decoded_array()
        return None if array is None else array[self.indices]


def sample_source(source: ImageSource, max_images: int, seed: int = 0) -> ImageSource:
    """At most `max_images` of `source`, drawn at random but in source order.

    Random rather than the first ones: folders list images class by class, so the first
    2,000 could all be one class.
    """
    if len(source) <= max_images:
        return source
    chosen = np.random.default_rng(seed).choice(len(source), size=max_images, replace=False)
    return SubsetSource(source, np.sort(chosen))


class FileListSource(FilesSource):
    """Image files named one by one (no labels); names are the paths as given."""

    def __init__(self, files: Sequence[str | Path]):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise DataFormatError("no image files given")
        self.path = self.files[0].parent


class ConcatSource(ImageSource):
    """Several sources read one after the other (labels dropped: their classes differ)."""

    def __init__(self, sources: Sequence[ImageSource]):
        if not sources:
            raise DataFormatError("no images given")
        self.sources = list(sources)
        self.path = self.sources[0].path
        self.starts = np.cumsum([0, *[len(s) for s in self.sources]])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> tuple[ImageSource, int]:
        which = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.sources[which], index - int(self.starts[which])

    def name(self, index: int) -> str:
        source, local = self._locate(index)
        return source.name(local)

    def load(self, index: int, min_size: int | None = None) -> np.ndarray:
        source, local = self._locate(index)
        return source.load(local, min_size)
