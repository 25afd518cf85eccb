"""Frames with motion masks for training motion segmentation: from an .npz made by
`selfsup video masks`, or computed from videos once and cached (keyed by the videos' paths,
sizes and modification times and the mask settings)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from selfsup.video.reader import ReadOptions, VideoError, find_videos


def cache_key(videos: list[Path], settings: dict) -> str:
    digest = hashlib.blake2b(digest_size=10)
    for path in videos:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """np.load of an .npz, or VideoError naming the file."""
    try:
        return np.load(path)
    except Exception as err:  # OSError, EOFError (empty file), BadZipFile (cut short), ...
        raise VideoError(f"{path}: cannot be read as an .npz archive ({err})") from err


def load_mask_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_npz(path) as data:
        if not {"images", "masks"} <= set(data.files):
            raise VideoError(
                f"{path}: motion-segmentation data needs `images` and `masks` arrays (made by "
                f"`selfsup video masks`); it has {', '.join(data.files)}"
            )
        images, masks = data["images"], data["masks"]
    if images.ndim != 4 or masks.shape != images.shape[:3]:
        raise VideoError(
            f"{path}: `images` (N, H, W, 3) and `masks` (N, H, W) do not match: "
            f"{images.shape} vs {masks.shape}"
        )
    if images.dtype != np.uint8 or not (
        np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool
    ):
        raise VideoError(
            f"{path}: `images` must be uint8 and `masks` integer or bool, got {images.dtype} "
            f"and {masks.dtype}"
        )
    return images, (masks > 0).astype(np.uint8)


def mask_settings(cfg) -> dict:
    """What cached masks are keyed on: the settings, the flow `auto` stands for (not the
    word), and the object masks' revision, so masks made with another flow or by an earlier
    version of the method are not reused."""
    from selfsup.video import objects
    from selfsup.video.motion import flow_method

    settings = {**asdict(cfg), "flow": flow_method(cfg)}
    if cfg.method == "object":
        settings["revision"] = objects.REVISION
    return settings


def motion_mask_data(spec: str, size: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) uint8 frames and (N, S, S) {0, 1} masks from `spec`: the folder
    `selfsup video masks` wrote, an .npz with `images` + `masks` (its motion_masks.npz), or
    comma-separated videos / folders of them."""
    from selfsup.outputs import default_cache_dir, fill_folder_once
    from selfsup.video.masks import write_masks
    from selfsup.video.motion import MotionMaskConfig

    paths = [p for p in spec.split(",") if p]
    if len(paths) == 1 and (Path(paths[0]) / "motion_masks.npz").is_file():
        return load_mask_npz(Path(paths[0]) / "motion_masks.npz")
    if len(paths) == 1 and Path(paths[0]).is_file() and paths[0].endswith(".npz"):
        with open_npz(Path(paths[0])) as data:
            is_mask_file = "masks" in data.files
        if is_mask_file:
            return load_mask_npz(Path(paths[0]))
    videos = find_videos(paths)
    cfg, options = MotionMaskConfig(), ReadOptions(size=size)
    folder = default_cache_dir() / "motion_masks" / cache_key(videos, mask_settings(cfg))
    if not (folder / "motion_masks.npz").is_file():
        print(f"computing motion masks of {len(videos)} videos (cached in {folder})")

        def fill(staging: Path) -> None:
            write_masks(videos, staging, cfg, options)
            if not (staging / "motion_masks.npz").is_file():
                raise VideoError(f"{spec}: could not combine the videos' frames")

        # Several trainings started at once on the same videos each compute the masks; the
        # first to finish publishes them whole.
        fill_folder_once(folder, fill, "motion_masks.npz")
    return load_mask_npz(folder / "motion_masks.npz")
