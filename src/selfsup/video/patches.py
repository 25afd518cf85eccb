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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from selfsup.config import param
from selfsup.outputs import written_atomically
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


def _worker(args: tuple) -> dict:
    path, cfg, position = args
    import cv2

    cv2.setNumThreads(1)  # one video per process: process parallelism, not thread contention
    return process_video(path, cfg, position)


def extract_patches(
    videos: list[Path], out: Path, cfg: PatchConfig, workers: int = 1, progress: bool = True
) -> dict:
    """Run every video (in `workers` processes), write `patches.npz`, `summary.json` and a
    preview image to `out`; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = [(path, cfg, 1 + i % max(workers, 1)) for i, path in enumerate(videos)]
    overall = tqdm(total=len(videos), desc="videos", unit="video", disable=not progress)
    results = []
    if workers > 1 and len(videos) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_worker, jobs):
                results.append(result)
                overall.update()
    else:
        for path, _, position in jobs:
            results.append(process_video(path, cfg, position, progress))
            overall.update()
    overall.close()
    dataset = merge(results, [video_name(p) for p in videos])
    write_npz_atomic(out / "patches.npz", dataset)
    summary = {
        "videos": [r["stats"] for r in results],
        "patches": len(dataset["images"]),
        "tracks": len(np.unique(dataset["track"])),
        "seconds": round(time.perf_counter() - start, 1),
        "workers": workers,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if len(dataset["images"]):
        save_preview(dataset, out / "preview.jpg")
    return summary


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

    size = dataset["images"].shape[1]
    ids = np.unique(dataset["track"])[:tracks]
    canvas = np.zeros((len(ids) * size, per_track * size, 3), np.uint8)
    for row, track_id in enumerate(ids):
        patches = dataset["images"][dataset["track"] == track_id][:per_track]
        for col, patch in enumerate(patches):
            canvas[row * size : (row + 1) * size, col * size : (col + 1) * size] = patch
    Image.fromarray(canvas).save(path, quality=90)
