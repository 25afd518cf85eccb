"""Where RGB-D frames come from: one reader per on-disk form, each giving full-size frames.

- `SevenScenesNpz`: the packed 7-Scenes npz (`jpeg`/`offsets` colour, `depth_png`/
  `depth_offsets` 16-bit depth, `depth_scale`, `intrinsics`); colour and depth cameras are
  not registered.
- `RgbdFolder`: RGB images paired with 16-bit depth PNGs by file name (see `pair_files`).
- `NyuMat`: the NYU Depth v2 labelled `.mat` (MATLAB v7.3, i.e. HDF5; needs h5py).

`load(i)` returns (rgb (H, W, 3) uint8, depth (H, W) float32 metres with 0 = no measurement).
Raw integer depth of 0 or of the type's maximum (65535 for uint16: a saturated or missing
Kinect reading) is invalid and becomes 0, so no later step can mistake it for a distance.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.data import DataFormatError
from selfsup.data.decode import open_image
from selfsup.data.sources import IMAGE_SUFFIXES

# NYU Depth v2 colour camera (the toolbox's camera_params.m), at 640x480.
NYU_INTRINSICS = np.array(
    [[518.857901, 0.0, 325.582449], [0.0, 519.469611, 253.736166], [0.0, 0.0, 1.0]], np.float32
)


def metres_from_raw(raw: np.ndarray, scale: float) -> np.ndarray:
    """Raw depth -> float32 metres, 0 where there is no measurement (0, saturated, NaN)."""
    if np.issubdtype(raw.dtype, np.integer):
        valid = (raw != 0) & (raw != np.iinfo(raw.dtype).max)
    else:
        valid = np.isfinite(raw) & (raw > 0)
    return np.where(valid, raw.astype(np.float64) * scale, 0.0).astype(np.float32)


def open_depth_png(data: bytes | Path, name: str) -> np.ndarray:
    """A single-channel (16-bit) depth image -> (H, W) integer array, values unchanged."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            raw = np.array(image)
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{name}: depth image cannot be decoded ({err})") from err
    if raw.ndim != 2:
        raise DataFormatError(f"{name}: depth must be one channel, got shape {raw.shape}")
    return raw


def check_same_size(rgb: np.ndarray, depth: np.ndarray, name: str) -> None:
    if rgb.shape[:2] != depth.shape[:2]:
        raise DataFormatError(
            f"{name}: RGB is {rgb.shape[1]}x{rgb.shape[0]} but depth is "
            f"{depth.shape[1]}x{depth.shape[0]} (width x height); pairs must match"
        )


class RgbdSource:
    """Base class: `len`, `name(i)`, `load(i)`, plus what is known about the camera."""

    path: Path
    intrinsics: np.ndarray | None = None  # (3, 3) at the stored resolution, None: unknown
    registered: bool = True  # False: depth is not pixel-aligned with colour

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class SevenScenesNpz(RgbdSource):
    registered = False

    def __init__(self, path: Path):
        self.path = path
        try:
            archive = np.load(path, allow_pickle=False)
            keys = archive.files
        except Exception as err:  # OSError, EOFError (empty file), BadZipFile (cut short), ...
            raise DataFormatError(f"{path}: cannot be read as an .npz archive ({err})") from err
        needed = {"jpeg", "offsets", "depth_png", "depth_offsets"}
        if not needed <= set(keys):
            raise DataFormatError(
                f"{path}: an RGB-D .npz needs keys {sorted(needed)}; it has {sorted(keys)}"
            )
        self.jpeg, self.offsets = archive["jpeg"], archive["offsets"]
        self.depth_png, self.depth_offsets = archive["depth_png"], archive["depth_offsets"]
        if len(self.offsets) != len(self.depth_offsets):
            raise DataFormatError(
                f"{path}: {len(self.offsets) - 1} colour images but "
                f"{len(self.depth_offsets) - 1} depth images"
            )
        self.scale = float(archive["depth_scale"]) if "depth_scale" in archive.files else 0.001
        if "intrinsics" in archive.files:
            self.intrinsics = archive["intrinsics"].astype(np.float32)
        self.names = [str(n) for n in archive["names"]] if "names" in archive.files else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def name(self, index: int) -> str:
        frame = f" ({self.names[index]})" if self.names else ""
        return f"{self.path}[{index}]{frame}"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.name(index)
        colour = self.jpeg[self.offsets[index] : self.offsets[index + 1]].tobytes()
        depth = self.depth_png[self.depth_offsets[index] : self.depth_offsets[index + 1]]
        rgb = open_image(colour, name)
        raw = open_depth_png(depth.tobytes(), name)
        check_same_size(rgb, raw, name)
        return rgb, metres_from_raw(raw, self.scale)


# File-name conventions of RGB-D folders: (colour pattern, depth pattern), the named group
# `key` pairing the two (7-Scenes, BTS's NYU layout, DenseDepth's NYU layout, generic).
NAME_RULES = (
    (r"(?P<key>.+)\.colou?r", r"(?P<key>.+)\.depth"),
    (r"rgb_(?P<key>.+)", r"sync_depth_(?P<key>.+)"),
    (r"(?P<key>.+)_colou?rs?", r"(?P<key>.+)_depth"),
    (r"(?P<key>.+)_rgb", r"(?P<key>.+)_depth"),
)
RGB_DIRS, DEPTH_DIRS = ("rgb", "color", "colour", "image", "images"), ("depth", "depths")


def natural_key(text: str) -> list:
    """'frame-10' sorts after 'frame-9': digits compare as numbers (frame order)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def pair_files(root: Path) -> list[tuple[Path, Path]]:
    """(rgb, depth) files under `root`, in frame order.

    Pairs are either `<dir>/{rgb,color,image}/X.*` with `<dir>/depth/X.png`, or files in one
    folder named by a rule in NAME_RULES (`X.color.jpg` + `X.depth.png`, `rgb_X.jpg` +
    `sync_depth_X.png`, `X_colors.png` + `X_depth.png`, `X_rgb.*` + `X_depth.png`).
    """
    rgb: dict[tuple, Path] = {}
    depth: dict[tuple, Path] = {}
    for file in root.rglob("*"):
        if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
            continue
        parent = file.parent.name.lower()
        if parent in RGB_DIRS:
            rgb[(str(file.parent.parent), "", file.stem)] = file
            continue
        if parent in DEPTH_DIRS:
            depth[(str(file.parent.parent), "", file.stem)] = file
            continue
        for index, (rgb_rule, depth_rule) in enumerate(NAME_RULES):
            if match := re.fullmatch(depth_rule, file.stem, re.IGNORECASE):
                depth.setdefault((str(file.parent), index, match["key"]), file)
            elif match := re.fullmatch(rgb_rule, file.stem, re.IGNORECASE):
                rgb.setdefault((str(file.parent), index, match["key"]), file)
    keys = sorted(rgb.keys() & depth.keys(), key=lambda k: (k[0], str(k[1]), natural_key(k[2])))
    return [(rgb[k], depth[k]) for k in keys]


def read_intrinsics(path: Path) -> np.ndarray:
    """A 3x3 camera matrix written as text (9 numbers, row by row)."""
    try:
        return np.loadtxt(path, dtype=np.float32).reshape(3, 3)
    except ValueError as err:
        raise DataFormatError(
            f"{path}: expected the 3x3 camera matrix as 9 numbers, row by row ({err})"
        ) from err


class RgbdFolder(RgbdSource):
    def __init__(self, path: Path, depth_scale: float = 0.001):
        self.path, self.scale = path, depth_scale
        self.pairs = pair_files(path)
        if not self.pairs:
            raise DataFormatError(
                f"{path}: no RGB + depth pairs found; expected rgb/X.jpg + depth/X.png, or "
                "X.color.jpg + X.depth.png, rgb_X.jpg + sync_depth_X.png, X_colors.png + "
                "X_depth.png"
            )
        for candidate in ("intrinsics.txt", "camera-intrinsics.txt"):
            if (path / candidate).is_file():
                self.intrinsics = read_intrinsics(path / candidate)

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        return str(self.pairs[index][0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgb_file, depth_file = self.pairs[index]
        rgb = open_image(rgb_file, str(rgb_file))
        raw = open_depth_png(depth_file, str(depth_file))
        check_same_size(rgb, raw, f"{rgb_file} / {depth_file.name}")
        return rgb, metres_from_raw(raw, self.scale)


class NyuMat(RgbdSource):
    """`nyu_depth_v2_labeled.mat`: `images` (N, 3, W, H) uint8 and `depths` (N, W, H) metres
    as h5py reads MATLAB's column-major arrays; its depths are in-painted (dense)."""

    intrinsics = NYU_INTRINSICS

    def __init__(self, path: Path):
        try:
            import h5py
        except ImportError as err:
            raise DataFormatError(
                f"{path}: reading the NYU .mat needs h5py (pip install 'selfsup[nyu]')"
            ) from err
        self.path = path
        try:
            self.file = h5py.File(path, "r")
        except OSError as err:
            raise DataFormatError(f"{path}: not an HDF5 (MATLAB v7.3) file ({err})") from err
        if not {"images", "depths"} <= set(self.file.keys()):
            raise DataFormatError(f"{path}: expected datasets `images` and `depths`")
        self.images, self.depths = self.file["images"], self.file["depths"]
        if len(self.images) != len(self.depths):
            raise DataFormatError(
                f"{path}: {len(self.images)} images but {len(self.depths)} depth maps"
            )

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return f"{self.path}[{index}]"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgb = np.ascontiguousarray(np.asarray(self.images[index]).transpose(2, 1, 0))
        raw = np.asarray(self.depths[index]).T
        check_same_size(rgb, raw, self.name(index))
        return rgb.astype(np.uint8), metres_from_raw(raw, 1.0)


def open_rgbd_source(path: str | Path, depth_scale: float = 0.001) -> RgbdSource:
    """Detect the form of `path` and open it, or raise DataFormatError."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: does not exist")
    if path.is_dir():
        return RgbdFolder(path, depth_scale)
    if path.suffix.lower() == ".npz":
        return SevenScenesNpz(path)
    if path.suffix.lower() in (".mat", ".h5", ".hdf5"):
        return NyuMat(path)
    raise DataFormatError(
        f"{path}: not RGB-D data; expected a packed .npz (7-Scenes form), a folder of RGB + "
        "depth PNG pairs, or the NYU Depth v2 labelled .mat"
    )
