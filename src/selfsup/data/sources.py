"""Image sources: where images come from (`selfsup.data.formats` tells which from a path).

- a folder: an ImageFolder tree (`root/<class>/**/<image>`, labels from sorted class names) or
  a flat folder of images (no labels);
- an `.npz`: decoded `images` (uint8, (N, H, W, 3) or (N, H, W)) or packed JPEG (`jpeg` uint8
  bytes concatenated + `offsets` (N + 1,)), with optional `labels` (N,) and `class_names`, and
  with decoded `images` optional per-pixel `masks` (N, H, W) (nonzero = on; e.g. the motion
  masks of `selfsup video masks`);
- the folder `selfsup video masks` or `selfsup video patches` wrote: its `motion_masks.npz` or
  `patches.npz` (a command reads what another's `--out` was given; see selfsup.outputs);
- tar shards (`selfsup.data.shards`).

A source only knows how to count, name and decode its images; fixing their size and batching
them is the loader's job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.decode import open_image

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
)


# The dataset inside the output folder of `selfsup video masks` and of `video patches`.
OUTPUT_DATASETS = ("motion_masks.npz", "patches.npz")


class DataFormatError(ValueError):
    """The data path is missing, empty or in a layout selfsup does not recognise."""


# Labels are class indices: one past a million would make every head and probe that size.
MAX_CLASSES = 2**20


def npz_array(archive, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz, or DataFormatError naming the file and the key: an array of
    Python objects (which needs pickle, never loaded) or a member cut short."""
    try:
        return archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataFormatError(
                f"{path}: `{key}` is an array of Python objects, which selfsup does not load "
                "(it would need pickle); save it as a numeric or string array"
            ) from err
        raise DataFormatError(f"{path}: `{key}` cannot be read ({err})") from err
    except Exception as err:  # zipfile errors: a member cut short or corrupt
        raise DataFormatError(f"{path}: `{key}` cannot be read ({err})") from err


class ImageSource:
    """Base class: `len`, `name(i)`, `load(i) -> (H, W, 3) uint8`, optional labels, optional
    masks ((N, H, W) uint8 0/1, pixel-aligned with the images)."""

    path: Path
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    class_names: list[str] | None = None
    names_given: bool = False  # class names from the data (folders, `class_names`), not 0..K-1

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int, min_size: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def decoded_array(self) -> np.ndarray | None:
        """All images as one (N, H, W, 3) uint8 array when stored that way, else None."""
        return None

    def encoded(self, index: int) -> bytes | None:
        """The image's encoded bytes (for a decoder other than PIL, such as the GPU's JPEG
        decoder), or None when it is stored decoded or cannot be read (`load` says why)."""
        return None

    def describe(self) -> str:
        labels = f", {len(self.class_names or [])} classes" if self.labels is not None else ""
        return f"{type(self).__name__} {self.path} ({len(self)} images{labels})"


class FilesSource(ImageSource):
    """Images stored one per file; names are the files' paths."""

    files: list[Path]

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int, min_size: int | None = None) -> np.ndarray:
        return open_image(self.files[index], self.name(index), min_size)

    def encoded(self, index: int) -> bytes | None:
        try:
            return self.files[index].read_bytes()
        except OSError:
            return None


class FolderSource(FilesSource):
    """An ImageFolder tree or a flat folder of image files."""

    def __init__(self, path: Path):
        self.path = path
        class_dirs = class_folders(path)
        if class_dirs:
            files, labels = [], []
            for label, class_dir in enumerate(class_dirs):
                found = sorted(
                    f
                    for f in class_dir.rglob("*")
                    if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                )
                files += found
                labels += [label] * len(found)
            self.class_names = [d.name for d in class_dirs]
            self.names_given = True
            self.labels = np.asarray(labels, dtype=np.int64)
        else:
            files = [f for f in image_files(path) if f.is_file()]
        if not files:
            raise DataFormatError(
                f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                "either directly in the folder or in one sub-folder per class)"
            )
        self.files = files


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path) -> list[Path]:
    """The class sub-folders of an ImageFolder tree, sorted (their order gives the labels);
    none for a flat folder (one with images directly in it)."""
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return [] if image_files(folder) else subfolders


class NpzSource(ImageSource):
    """Images stored in an .npz, decoded (`images`) or as packed JPEG (`jpeg` + `offsets`)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            archive = np.load(path, allow_pickle=False)
            keys = set(archive.files)
        except Exception as err:  # zipfile/pickle errors: the file is not a usable npz
            raise DataFormatError(f"{path}: cannot be read as an .npz archive ({err})") from err
        self.images = self.jpeg = self.offsets = None
        array = lambda key: npz_array(archive, key, path)  # noqa: E731
        if "images" in keys:
            self.images = self._decoded(array("images"))
            count = len(self.images)
        elif {"jpeg", "offsets"} <= keys:
            self.jpeg, self.offsets = self._packed(array("jpeg"), array("offsets"))
            count = len(self.offsets) - 1
        else:
            raise DataFormatError(
                f"{path}: keys {sorted(keys)} hold no images; expected `images` (uint8 N,H,W,3) "
                "or packed JPEG `jpeg` + `offsets`"
            )
        if count == 0:
            raise DataFormatError(f"{path}: the archive holds 0 images")
        if "labels" in keys:
            self.labels = self._labels(array("labels"), count)
        if "masks" in keys:
            self.masks = self._masks(array("masks"))
        if "class_names" in keys:
            self.class_names = [str(n) for n in array("class_names")]
            self.names_given = True
            self._check_names()
        elif self.labels is not None:
            self.class_names = [str(i) for i in range(int(self.labels.max()) + 1)]
        self.count = count

    def _check_names(self) -> None:
        """Every label names a class: a label past the names would index nothing."""
        if self.labels is not None and int(self.labels.max()) >= len(self.class_names):
            raise DataFormatError(
                f"{self.path}: label {int(self.labels.max())} but `class_names` names "
                f"{len(self.class_names)} classes (labels count from 0)"
            )

    def _decoded(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8:
            raise DataFormatError(f"{self.path}: `images` must be uint8, got {images.dtype}")
        if images.ndim == 3:  # grayscale (N, H, W)
            images = np.repeat(images[..., None], 3, axis=3)
        if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
            raise DataFormatError(f"{self.path}: `images` must be (N, H, W, 3), got {images.shape}")
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise DataFormatError(f"{self.path}: `images` {images.shape} have no pixels")
        if images.shape[3] == 1:
            images = np.repeat(images, 3, axis=3)
        return images[..., :3]  # RGBA: alpha dropped (decoded arrays carry no compositing)

    def _packed(self, jpeg: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
            raise DataFormatError(
                f"{self.path}: `jpeg` must be a 1-D uint8 byte array, got {jpeg.dtype} {jpeg.shape}"
            )
        if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or len(offsets) < 1:
            raise DataFormatError(f"{self.path}: `offsets` must be a 1-D integer array")
        if offsets[0] != 0 or offsets[-1] != len(jpeg) or np.any(np.diff(offsets) < 0):
            raise DataFormatError(
                f"{self.path}: `offsets` must rise from 0 to len(jpeg)={len(jpeg)}"
            )
        return jpeg, offsets.astype(np.int64)

    def _labels(self, labels: np.ndarray, count: int) -> np.ndarray:
        if labels.shape != (count,):
            raise DataFormatError(
                f"{self.path}: `labels` has shape {labels.shape} but there are {count} images"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataFormatError(
                f"{self.path}: `labels` must be non-negative integers, got {labels.dtype}"
            )
        if count and labels.min() < 0:
            raise DataFormatError(
                f"{self.path}: `labels` must be non-negative integers, got {labels.min()}"
            )
        if count and labels.max() >= MAX_CLASSES:
            raise DataFormatError(
                f"{self.path}: label {labels.max()}: more than {MAX_CLASSES:,} classes; labels "
                "are class indices counted from 0"
            )
        return labels.astype(np.int64)

    def _masks(self, masks: np.ndarray) -> np.ndarray:
        if self.images is None:
            raise DataFormatError(f"{self.path}: `masks` need decoded `images`, not packed JPEG")
        if masks.shape != self.images.shape[:3]:
            raise DataFormatError(
                f"{self.path}: `masks` has shape {masks.shape}; expected (N, H, W) = "
                f"{self.images.shape[:3]} like `images`"
            )
        if not (np.issubdtype(masks.dtype, np.integer) or masks.dtype == np.bool_):
            raise DataFormatError(
                f"{self.path}: `masks` must be integer or bool, got {masks.dtype}"
            )
        return (masks != 0).astype(np.uint8)

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"{self.path}[{index}]"

    def load(self, index: int, min_size: int | None = None) -> np.ndarray:
        if self.images is not None:
            return self.images[index]
        start, end = self.offsets[index], self.offsets[index + 1]
        return open_image(self.jpeg[start:end].tobytes(), self.name(index), min_size)

    def decoded_array(self) -> np.ndarray | None:
        return self.images

    def encoded(self, index: int) -> bytes | None:
        if self.jpeg is None:
            return None
        return self.jpeg[self.offsets[index] : self.offsets[index + 1]].tobytes()
