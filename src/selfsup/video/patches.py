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
from operator import attrgetter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from selfsup.config import ConfigError, param
from selfsup.data.patch_graph import MANIFEST_NAME
from selfsup.outputs import save_npz, written_atomically
from selfsup.video.jobs import (
    EVERY_VIDEO,
    Piece,
    Runner,
    Shard,
    VideoFailures,
    chunks,
    report_failures,
    run_videos,
)
from selfsup.video.motion import MotionMaskConfig
from selfsup.video.proposals import ProposalConfig, box_iou, proposals, square_box
from selfsup.video.reader import MOTION_FRAMES, ReadOptions, count_frames, read_video, video_name
from selfsup.video.segment import motion_masks
from selfsup.video.track import TrackConfig, track


@dataclass
class PatchConfig:
    size: int = param(240, "Frames are resized to this shorter side before anything else.", low=16)
    stride: int = param(1, "Keep every stride-th frame of each video.", low=1)
    max_frames: int = param(0, "Use at most this many (kept) frames per video; 0: all.", low=0)
    chunk_frames: int = param(
        0,
        "Mine a video of more kept frames than this in chunks of this many, one task each: "
        "memory bounded by the chunk, not the video (a track ends at its chunk's end); "
        "0: whole videos.",
        low=0,
    )
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


def frames_of(piece: Piece, cfg: PatchConfig) -> int | None:
    """How many kept frames `piece` reads: its chunk's, the rest of `max_frames` for the
    last chunk, else all (None)."""
    if piece.frames is not None:
        return piece.frames
    return cfg.max_frames - piece.first if cfg.max_frames else None


def process_video(
    path: Path | Piece, cfg: PatchConfig, position: int = 0, progress: bool = True
) -> dict:
    """Patches and statistics of one video, or of one chunk of it (see the module docstring
    for the arrays; a chunk's `frame` counts from the start of its video)."""
    piece = path if isinstance(path, Piece) else Piece(path)
    bar = tqdm(
        total=3,
        desc=piece.name[:24],
        position=position,
        leave=False,
        disable=not progress,
        bar_format="{desc}: {n}/{total} {postfix}",
    )
    bar.set_postfix_str("reading")
    frames = read_video(
        piece.video,
        ReadOptions(cfg.stride, cfg.size, frames_of(piece, cfg)),
        min_frames=MOTION_FRAMES if piece.first == 0 else 0,  # a chunk may find the end
        first=piece.first,
    )
    bar.update()
    bar.set_postfix_str("motion masks")
    start = time.perf_counter()
    if len(frames) < MOTION_FRAMES:  # a last chunk past what the container really holds
        frames = np.zeros((0, 1, 1, 3), np.uint8)
    masks = motion_masks(frames, cfg.masks) if len(frames) else np.zeros((0, 1, 1), bool)
    mask_seconds = max(time.perf_counter() - start, 1e-9)
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
            frame_ids.append(piece.first + t)
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
            "video": video_name(piece.video),
            **({"first_frame": piece.first} if piece.chunked else {}),
            "frames": len(frames),
            "frame_size": list(frames.shape[1:3]),
            "tracks": len(paths),
            "mean_track_length": float(np.mean([len(p) for p in paths])) if paths else 0.0,
            "patches": len(images),
            "mask_fps": len(frames) / mask_seconds,
            "track_fps": tracked_frames / track_seconds if tracked_frames else None,
        },
    }


VIDEOS_FOLDER = "videos"  # OUT/videos/<video>.npz (or <video>@<first frame>.npz): written whole


def video_file(out: Path, piece: Path | Piece) -> Path:
    name = piece.name if isinstance(piece, Piece) else video_name(piece)
    return out / VIDEOS_FOLDER / f"{name}.npz"


def plan_file(out: Path, video: Path) -> Path:
    """The chunks a long video was cut into (written before they are mined): together with
    their files, whether the video is done."""
    return out / VIDEOS_FOLDER / f"{video_name(video)}.chunks.json"


def settings_text(cfg: PatchConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def plan(video: Path, out: Path, cfg: PatchConfig) -> list[Piece]:
    """The pieces `video` is mined in: itself, or (with `chunk_frames`) its chunks, as an
    earlier run planned them when it did (so a rerun finishes the same chunks)."""
    if not cfg.chunk_frames:
        return [Piece(video)]
    planned = read_plan(out, video, cfg)
    if planned is not None:
        return planned
    options = ReadOptions(cfg.stride, cfg.size, cfg.max_frames or None)
    pieces = chunks(video, count_frames(video, options), cfg.chunk_frames)
    if pieces[0].chunked:
        (out / VIDEOS_FOLDER).mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {"settings": settings_text(cfg), "chunks": [[p.first, p.frames] for p in pieces]}
        )
        with written_atomically(plan_file(out, video)) as temporary:
            temporary.write_text(text)
    return pieces


def read_plan(out: Path, video: Path, cfg: PatchConfig) -> list[Piece] | None:
    file = plan_file(out, video)
    if not file.is_file():
        return None
    planned = json.loads(file.read_text())
    if planned["settings"] != settings_text(cfg):
        raise ConfigError(
            f"{file}: planned with other settings than this run's; give another --out, or "
            "the settings it was mined with"
        )
    return [Piece(video, first, frames, chunked=True) for first, frames in planned["chunks"]]


def done_pieces(out: Path, video: Path, cfg: PatchConfig) -> list[Piece] | None:
    """The pieces of `video` when every one is mined under `out` (by any run), else None."""
    if video_file(out, video).is_file():
        return [Piece(video)]
    pieces = read_plan(out, video, cfg)
    if pieces and all(video_file(out, p).is_file() for p in pieces):
        return pieces
    return None


def mine_video(piece: Path | Piece, out: Path, cfg: PatchConfig) -> dict:
    """Patches of one video (or chunk) written to `video_file` atomically (with its
    statistics and the settings that made them); returns the statistics."""
    result = process_video(piece, cfg, progress=False)
    arrays = {k: result[k] for k in ("images", "masks", "track", "frame", "box")}
    stats = json.dumps(result["stats"])
    save_npz(
        video_file(out, piece),
        {**arrays, "stats": np.asarray(stats), "settings": np.asarray(settings_text(cfg))},
    )
    return result["stats"]


def mined_stats(out: Path, piece: Path | Piece, cfg: PatchConfig) -> dict | None:
    """The statistics of a video (or chunk) when its patches are already under `out`; an
    error when they were mined with other settings (a rerun would mix two datasets)."""
    file = video_file(out, piece)
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
    mine = [p for v in videos if shard.holds(v) for p in plan(v, out, cfg)]
    stats = {p.name: s for p in mine if (s := mined_stats(out, p, cfg)) is not None}
    todo = [p for p in mine if p.name not in stats]
    if stats:
        print(f"{len(stats)} of {len(mine)} {unit(mine)} already mined in {out}: skipped")
    results, failures = run_videos(
        todo, mine_video, (out, cfg), runner, "patches", attrgetter("name")
    )
    stats.update(results)
    seconds = round(time.perf_counter() - start, 1)
    summary = {
        "videos": [stats[p.name] for p in mine if p.name in stats],
        "patches": sum(s["patches"] for s in stats.values()),
        "tracks": sum(s["tracks"] for s in stats.values()),
        "seconds": seconds,
        "workers": workers,
        "mined_now": len(results),
        "complete": False,
    }
    pieces = [done_pieces(out, v, cfg) for v in videos]
    if not failures and all(p is not None for p in pieces):
        summary = write_dataset([p for each in pieces for p in each], out, seconds, workers,
                                len(results))  # fmt: skip
    if failures:
        report_failures(failures)
        raise VideoFailures(failures, len(todo), len(results))
    return summary


def unit(pieces: list[Piece]) -> str:
    return "chunks" if any(p.chunked for p in pieces) else "videos"


# The combined copy `patches.npz` is written up to this many patches (about 1.2 GB at 64 px):
# image training (`train TASK --data OUT`) reads it; beyond, only the shards (graph build).
COMBINED_MAX_PATCHES = 100_000


def write_dataset(pieces: list[Piece], out: Path, seconds: float, workers: int, now: int) -> dict:
    """`manifest.json` (the shards: one per video, or per chunk, in the order of `pieces`),
    `summary.json`, a preview and, for a set of at most COMBINED_MAX_PATCHES, the combined
    copy `patches.npz`. Reads the shards one at a time, except for the combined copy."""
    stats, shards = [], []
    for piece in pieces:
        with np.load(video_file(out, piece)) as data:
            stats.append(json.loads(str(data["stats"])))
        shards.append(
            {
                "video": video_name(piece.video),
                **({"first_frame": piece.first} if piece.chunked else {}),
                "file": f"{VIDEOS_FOLDER}/{video_file(out, piece).name}",
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
        for piece, piece_stats in zip(pieces, stats):
            with np.load(video_file(out, piece)) as data:
                results.append({k: data[k] for k in ("images", "masks", "track", "frame", "box")})
            results[-1]["stats"] = piece_stats
        save_npz(out / "patches.npz", merge(results, [video_name(p.video) for p in pieces]))
    save_preview(first_tracks(pieces, out), out / "preview.jpg")
    with written_atomically(out / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    manifest = {"format": 1, "patches": total, "tracks": summary["tracks"], "shards": shards}
    with written_atomically(out / MANIFEST_NAME) as temporary:  # last: the set is whole
        temporary.write_text(json.dumps(manifest, indent=1))
    return summary


def first_tracks(pieces: list[Piece], out: Path, tracks: int = 8) -> dict:
    """The patches of the first `tracks` tracks (from the first shards that have them)."""
    images, ids = [], []
    for piece in pieces:
        with np.load(video_file(out, piece)) as data:
            images.append(data["images"])
            ids.append(data["track"] + len(ids) * 10**9)  # unique over shards, in order
        if len(np.unique(np.concatenate(ids))) >= tracks:
            break
    return {"images": np.concatenate(images), "track": np.concatenate(ids)}


def merge(results: list[dict], names: list[str]) -> dict:
    """One patch set from per-video (or per-chunk) results: tracks numbered on from one to
    the next, `video` the index of each result's name among the distinct `names`."""
    offset, tracks, index = 0, [], {}
    for r in results:
        tracks.append(r["track"] + offset)
        offset += r["stats"]["tracks"]
    videos = [index.setdefault(name, len(index)) for name in names]
    return {
        "images": np.concatenate([r["images"] for r in results]),
        "masks": np.concatenate([r["masks"] for r in results]),
        "video": np.concatenate(
            [np.full(len(r["track"]), i, np.int64) for i, r in zip(videos, results)]
        ),
        "track": np.concatenate(tracks),
        "frame": np.concatenate([r["frame"] for r in results]),
        "box": np.concatenate([r["box"] for r in results]),
        "video_names": np.asarray(list(index)),
    }


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
