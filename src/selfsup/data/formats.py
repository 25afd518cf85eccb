"""What a data path holds, and the source that reads it: the one place a path's format is
decided (a folder of images, an .npz, tar shards, or the folder another command wrote)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.shards import ShardSource, is_shard_path
from selfsup.data.sources import (
    OUTPUT_DATASETS,
    DataFormatError,
    FolderSource,
    ImageSource,
    NpzSource,
    class_folders,
)


def open_source(path: str | Path) -> ImageSource:
    """Detect the format of `path` (folder, .npz or tar shards) and open it, or raise
    DataFormatError."""
    if not str(path):
        raise DataFormatError(
            "no data path given (use --data PATH: a folder, an .npz or .tar shards)"
        )
    if is_shard_path(path):  # before the existence check: a pattern is no file itself
        return ShardSource(path)
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: does not exist")
    if path.is_dir():
        inner = next((path / n for n in OUTPUT_DATASETS if (path / n).is_file()), None)
        return NpzSource(inner) if inner else FolderSource(path)
    if path.suffix.lower() == ".npz":
        return NpzSource(path)
    raise DataFormatError(
        f"{path}: not a recognised dataset; expected a folder of images "
        "(flat or one sub-folder per class), an .npz file or .tar shards"
    )


def class_count(path: str | Path) -> int | None:
    """The number of classes of the dataset at `path`, read from its header (the class
    folders, an .npz's `class_names` or `labels`, the shards' index of `.cls` labels) without
    decoding an image; None when it has no labels. The same count `open_source(path)` gives
    its labels."""
    if is_shard_path(path):
        source = ShardSource(path)  # its index is cached: a second open reads no tar
        return None if source.labels is None else len(source.class_names)
    path = Path(path)
    if path.is_dir():
        inner = next((path / n for n in OUTPUT_DATASETS if (path / n).is_file()), None)
        if inner is None:
            return len(class_folders(path)) or None
        path = inner
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "labels" not in archive.files or archive["labels"].size == 0:
                return None
            if "class_names" in archive.files:
                return len(archive["class_names"])
            return int(archive["labels"].max()) + 1
    except Exception as err:  # zipfile/pickle errors: the file is not a usable npz
        raise DataFormatError(f"{path}: cannot be read as an .npz archive ({err})") from err
    return None
