"""Frames with motion masks for training motion segmentation from videos: computed once and
cached (keyed by the videos' paths, sizes and modification times and the mask settings), as
the folder `selfsup video masks` writes, which training then reads as data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from selfsup.video.reader import ReadOptions, VideoError, find_videos


def cache_key(videos: list[Path], settings: dict) -> str:
    digest = hashlib.blake2b(digest_size=10)
    for path in videos:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


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


def mask_dataset(spec: str, size: int = 240) -> str:
    """A dataset of frames with motion masks that `selfsup.data.open_source` reads, for
    `spec`: the folder `selfsup video masks` wrote or an .npz (returned as they are), or
    comma-separated videos / folders of them, whose masks (frames at `size` px) are computed
    once into the cache and the cache entry returned."""
    from selfsup.outputs import default_cache_dir, fill_folder_once
    from selfsup.video.masks import write_masks
    from selfsup.video.motion import MotionMaskConfig

    paths = [p for p in spec.split(",") if p]
    if len(paths) == 1 and (Path(paths[0]) / "motion_masks.npz").is_file():
        return paths[0]
    if len(paths) == 1 and paths[0].lower().endswith(".npz"):
        return paths[0]  # read as data: a file without masks is refused there, by name
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
    return str(folder)
