"""From videos to a dataset of tracked moving-object patches (DESIGN §2 steps 1-2).

Per video: read frames at `size` px (shorter side), compute motion masks, take proposals on
every `seed_every`-th frame (skipping those a live track already covers), track each one
forward, and cut a square patch (with `context` margin, resized to `patch_size`) every
`patch_every` frames along each track. The patch's motion mask is cut the same way.

The dataset is one .npz:

    images  (N, P, P, 3) uint8   the patches
    masks   (N, P, P) uint8      their motion masks (255 = moving)
    video   (N,) int64           index into video_names
    track   (N,) int64           track id, unique over the whole dataset
    frame   (N,) int64           frame index (after stride) in its video
    box     (N, 4) float32       tracked box x, y, w, h in the frame at `size`
    video_names (V,) str

Patches of one track are the intra-instance positives of transitive invariance; the images
and masks also train motion segmentation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from selfsup.config import ConfigError, param
from selfsup.data.patch_graph import MANIFEST_NAME
from selfsup.outputs import written_atomically
from selfsup.video.jobs import (
    EVERY_VIDEO,
    Runner,
    Shard,
    VideoFailures,
    report_failures,
    run_videos,
)
from selfsup.video.motion import MotionMaskConfig
from selfsup.video.proposals import ProposalConfig, box_iou, proposals, square_box
from selfsup.video.reader import MOTION_FRAMES, ReadOptions, read_video, video_name
from selfsup.video.segment import motion_masks
from selfsup.video.track import TrackConfig, track


@dataclass
class PatchConfig:
    size: int = param(240, "Frames are resized to this shorter side before anything else.", low=16)
    stride: int = param(1, "Keep every stride-th frame of each video.", low=1)
    max_frames: int = param(0, "Use at most this many (kept) frames per video; 0: all.", low=0)
    seed_every: int = param(10, "Proposals are taken on every seed_every-th frame.", low=1)
    patch_every: int = param(5, "A patch is cut every patch_every frames along a track.", low=1)
    patch_size: int = param(64, "Side of the saved square patches.", low=8)
    context: float = param(
        0.2, "Margin added around a box, as a fraction of its longer side.", low=0.0
    )
    dedupe_iou: float = param(
        0.5, "A proposal overlapping a live track this much (IoU) is not tracked again.", low=0.0
    )
    masks: MotionMaskConfig = field(default_factory=MotionMaskConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)


def seed_tracks(frames: np.ndarray, masks: np.ndarray, cfg: PatchConfig) -> list[list]:
    paths: list[list] = []
    covered: dict[int, list] = {}  # frame -> boxes of tracks alive there
    for start in range(0, len(frames), cfg.seed_every):
        for box in proposals(masks[start], cfg.proposals):
            if any(box_iou(box, other) > cfg.dedupe_iou for other in covered.get(start, [])):
                continue
            path = track(frames, start, box, cfg.track, masks)
            paths.append(path)
            for t, tracked in path:
                covered.setdefault(t, []).append(tracked)
    return paths


def cut_patch(image: np.ndarray, box, cfg: PatchConfig) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    left, top, side = square_box(box, cfg.context, width, height)
    crop = image[top : top + side, left : left + side]
    kernel = cv2.INTER_AREA if side > cfg.patch_size else cv2.INTER_LINEAR
    if image.ndim == 2:
        kernel = cv2.INTER_NEAREST
    return cv2.resize(crop, (cfg.patch_size, cfg.patch_size), interpolation=kernel)


def process_video(path: Path, cfg: PatchConfig, position: int = 0, progress: bool = True) -> dict:
    """Patches and statistics of one video (see the module docstring for the arrays)."""
    bar = tqdm(
        total=3,
        desc=video_name(path)[:24],
        position=position,
        leave=False,
        disable=not progress,
        bar_format="{desc}: {n}/{total} {postfix}",
    )
    bar.set_postfix_str("reading")
    options = ReadOptions(cfg.stride, cfg.size, cfg.max_frames or None)
    frames = read_video(path, options, min_frames=MOTION_FRAMES)
    bar.update()
    bar.set_postfix_str("motion masks")
    start = time.perf_counter()
    masks = motion_masks(frames, cfg.masks)
    mask_seconds = time.perf_counter() - start
    bar.update()
    bar.set_postfix_str("tracking")
    start = time.perf_counter()
    paths = seed_tracks(frames, masks, cfg)
    track_seconds = time.perf_counter() - start
    bar.update()
    bar.close()
    images, patch_masks, tracks, frame_ids, boxes = [], [], [], [], []
    for track_id, tracked in enumerate(paths):
        for t, box in tracked[:: cfg.patch_every]:
            images.append(cut_patch(frames[t], box, cfg))
            patch_masks.append(cut_patch(masks[t].astype(np.uint8) * 255, box, cfg))
            tracks.append(track_id)
            frame_ids.append(t)
            boxes.append(box)
    tracked_frames = sum(len(p) for p in paths)
    return {
        "images": np.stack(images)
        if images
        else np.zeros((0, cfg.patch_size, cfg.patch_size, 3), np.uint8),
        "masks": np.stack(patch_masks)
        if patch_masks
        else np.zeros((0, cfg.patch_size, cfg.patch_size), np.uint8),
        "track": np.asarray(tracks, np.int64),
        "frame": np.asarray(frame_ids, np.int64),
        "box": np.asarray(boxes, np.float32).reshape(-1, 4),
        "stats": {
            "video": video_name(path),
            "frames": len(frames),
            "frame_size": list(frames.shape[1:3]),
            "tracks": len(paths),
            "mean_track_length": float(np.mean([len(p) for p in paths])) if paths else 0.0,
            "patches": len(images),
            "mask_fps": len(frames) / mask_seconds,
            "track_fps": tracked_frames / track_seconds if tracked_frames else None,
        },
    }


VIDEOS_FOLDER = "videos"  # OUT/videos/<video>.npz: one video's patches, written whole


def video_file(out: Path, video: Path) -> Path:
    return out / VIDEOS_FOLDER / f"{video_name(video)}.npz"


def settings_text(cfg: PatchConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def mine_video(video: Path, out: Path, cfg: PatchConfig) -> dict:
    """Patches of one video written to `video_file` atomically (with its statistics and the
    settings that made them); returns the statistics."""
    result = process_video(video, cfg, progress=False)
    arrays = {k: result[k] for k in ("images", "masks", "track", "frame", "box")}
    stats = json.dumps(result["stats"])
    write_npz_atomic(
        video_file(out, video),
        {**arrays, "stats": np.asarray(stats), "settings": np.asarray(settings_text(cfg))},
    )
    return result["stats"]


def mined_stats(out: Path, video: Path, cfg: PatchConfig) -> dict | None:
    """The statistics of `video` when its patches are already under `out`; an error when
    they were mined with other settings (a rerun would mix two datasets)."""
    file = video_file(out, video)
    if not file.is_file():
        return None
    with np.load(file) as data:
        if str(data["settings"]) != settings_text(cfg):
            raise ConfigError(
                f"{file}: mined with other settings than this run's; give another --out, or "
                "the settings it was mined with"
            )
        return json.loads(str(data["stats"]))


def extract_patches(
    videos: list[Path],
    out: Path,
    cfg: PatchConfig,
    workers: int = 1,
    progress: bool = True,
    shard: Shard = EVERY_VIDEO,
    runner: Runner | None = None,
) -> dict:
    """Mine the videos of `shard` not yet under `out` (in `workers` processes, or as
    `runner` says), each into `out/videos/<video>.npz`; once every video of `videos` is
    there, also `patches.npz` (all of them), `summary.json` and a preview image. Returns the
    summary; raises VideoFailures, after the others are done, when any video failed."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runner = runner or Runner(workers=workers, progress=progress)
    mine = [v for v in videos if shard.holds(v)]
    stats = {video_name(v): s for v in mine if (s := mined_stats(out, v, cfg)) is not None}
    todo = [v for v in mine if video_name(v) not in stats]
    if stats:
        print(f"{len(stats)} of {len(mine)} videos already mined in {out}: skipped")
    results, failures = run_videos(todo, mine_video, (out, cfg), runner, "patches")
    stats.update(results)
    seconds = round(time.perf_counter() - start, 1)
    summary = {
        "videos": [stats[video_name(v)] for v in mine if video_name(v) in stats],
        "patches": sum(s["patches"] for s in stats.values()),
        "tracks": sum(s["tracks"] for s in stats.values()),
        "seconds": seconds,
        "workers": workers,
        "mined_now": len(results),
        "complete": False,
    }
    if not failures and all(video_file(out, v).is_file() for v in videos):
        summary = write_dataset(videos, out, seconds, workers, len(results))
    if failures:
        report_failures(failures)
        raise VideoFailures(failures, len(todo), len(results))
    return summary


# The combined copy `patches.npz` is written up to this many patches (about 1.2 GB at 64 px):
# image training (`train TASK --data OUT`) reads it; beyond, only the shards (graph build).
COMBINED_MAX_PATCHES = 100_000


def write_dataset(videos: list[Path], out: Path, seconds: float, workers: int, now: int) -> dict:
    """`manifest.json` (the shards, in the order of `videos`), `summary.json`, a preview and,
    for a set of at most COMBINED_MAX_PATCHES, the combined copy `patches.npz`. Reads the
    shards one at a time, except for the combined copy."""
    stats, shards = [], []
    for video in videos:
        with np.load(video_file(out, video)) as data:
            stats.append(json.loads(str(data["stats"])))
        shards.append(
            {
                "video": video_name(video),
                "file": f"{VIDEOS_FOLDER}/{video_file(out, video).name}",
                "patches": stats[-1]["patches"],
                "tracks": stats[-1]["tracks"],
            }
        )
    total = sum(s["patches"] for s in stats)
    summary = {
        "videos": stats,
        "patches": total,
        "tracks": sum(s["tracks"] for s in stats),
        "seconds": seconds,
        "workers": workers,
        "mined_now": now,
        "complete": True,
        "combined": total <= COMBINED_MAX_PATCHES,
    }
    if summary["combined"]:
        results = []
        for video, video_stats in zip(videos, stats):
            with np.load(video_file(out, video)) as data:
                results.append({k: data[k] for k in ("images", "masks", "track", "frame", "box")})
            results[-1]["stats"] = video_stats
        write_npz_atomic(out / "patches.npz", merge(results, [video_name(p) for p in videos]))
    save_preview(first_tracks(videos, out), out / "preview.jpg")
    with written_atomically(out / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    manifest = {"format": 1, "patches": total, "tracks": summary["tracks"], "shards": shards}
    with written_atomically(out / MANIFEST_NAME) as temporary:  # last: the set is whole
        temporary.write_text(json.dumps(manifest, indent=1))
    return summary


def first_tracks(videos: list[Path], out: Path, tracks: int = 8) -> dict:
    """The patches of the first `tracks` tracks (from the first shards that have them)."""
    images, ids = [], []
    for video in videos:
        with np.load(video_file(out, video)) as data:
            images.append(data["images"])
            ids.append(data["track"] + len(ids) * 10**9)  # unique over shards, in order
        if len(np.unique(np.concatenate(ids))) >= tracks:
            break
    return {"images": np.concatenate(images), "track": np.concatenate(ids)}


def merge(results: list[dict], names: list[str]) -> dict:
    offset, tracks = 0, []
    for r in results:
        tracks.append(r["track"] + offset)
        offset += r["stats"]["tracks"]
    return {
        "images": np.concatenate([r["images"] for r in results]),
        "masks": np.concatenate([r["masks"] for r in results]),
        "video": np.concatenate(
            [np.full(len(r["track"]), i, np.int64) for i, r in enumerate(results)]
        ),
        "track": np.concatenate(tracks),
        "frame": np.concatenate([r["frame"] for r in results]),
        "box": np.concatenate([r["box"] for r in results]),
        "video_names": np.asarray(names),
    }


def write_npz_atomic(path: Path, arrays: dict) -> None:
    with written_atomically(path) as temporary:
        np.savez(temporary, **arrays)


def save_preview(dataset: dict, path: Path, tracks: int = 8, per_track: int = 8) -> None:
    """One row per track (the first `tracks`), its patches left to right."""
    from PIL import Image

    if not len(dataset["images"]):
        return
    size = dataset["images"].shape[1]
    ids = np.unique(dataset["track"])[:tracks]
    canvas = np.zeros((len(ids) * size, per_track * size, 3), np.uint8)
    for row, track_id in enumerate(ids):
        patches = dataset["images"][dataset["track"] == track_id][:per_track]
        for col, patch in enumerate(patches):
            canvas[row * size : (row + 1) * size, col * size : (col + 1) * size] = patch
    with written_atomically(path) as temporary:
        Image.fromarray(canvas).save(temporary, quality=90)
