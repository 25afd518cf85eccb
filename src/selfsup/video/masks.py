"""`selfsup video masks`: motion masks of videos written as PNGs, an .npz for training motion
segmentation, overlays to look at, and DAVIS scores (J, F and their statistics, at the
ground truth's resolution) when ground truth is given."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from selfsup.config import ConfigError
from selfsup.outputs import fill_folder_once, save_npz, written_atomically
from selfsup.video.evaluate import read_masks, score_masks, upsample_masks
from selfsup.video.jobs import (
    EVERY_VIDEO,
    Runner,
    Shard,
    VideoFailures,
    report_failures,
    run_videos,
)
from selfsup.video.motion import MotionMaskConfig
from selfsup.video.reader import MOTION_FRAMES, ReadOptions, frame_files, read_video, video_name
from selfsup.video.rules import RuleLog
from selfsup.video.segment import motion_masks


def ground_truth_for(gt_root: Path, name: str, single: bool) -> Path:
    """A single video's ground truth is GT itself; several videos' are GT/<video name>."""
    if single and frame_files(gt_root):
        return gt_root
    return gt_root / name


def overlay(
    frames: np.ndarray, masks: np.ndarray, truth: np.ndarray | None, count: int = 6
) -> np.ndarray:
    """`count` frames spread over the video: prediction tinted red, ground truth outlined
    in green."""
    import cv2

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    tiles = []
    for t in picks:
        tile = frames[t].astype(np.float32)
        tile[masks[t]] = 0.5 * tile[masks[t]] + 0.5 * np.array([255, 0, 0])
        tile = tile.astype(np.uint8)
        if truth is not None:
            contours, _ = cv2.findContours(
                truth[t].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(tile, contours, -1, (0, 255, 0), 2)
        tiles.append(tile)
    rows = [np.concatenate(tiles[i : i + 3], 1) for i in range(0, len(tiles), 3)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, 0)


def centre_square(array: np.ndarray) -> np.ndarray:
    """Centre-crop (T, H, W, ...) to (T, S, S, ...), S = min(H, W)."""
    h, w = array.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return array[:, top : top + side, left : left + side]


RESULT_NAME = "result.json"  # in OUT/<video>/, written last: the video is done


def mask_one(
    path: Path, folder: Path, cfg: MotionMaskConfig, options: ReadOptions, truth_path: Path | None
) -> dict:
    from PIL import Image

    frames = read_video(path, options, min_frames=MOTION_FRAMES)
    start = time.perf_counter()
    log = RuleLog()
    masks = motion_masks(frames, cfg, log)
    seconds = time.perf_counter() - start
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for t, mask in enumerate(masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{t:05d}.png")
    save_npz(folder / "masks.npz", {"images": frames, "masks": masks.astype(np.uint8) * 255})
    result: dict = {
        "video": video_name(path),
        "frames": len(frames),
        "frame_size": list(frames.shape[1:3]),
        "fps": len(frames) / seconds,
        "rules": log.entries,  # what the clip-wide rules did (selfsup.video.rules)
    }
    truth = None
    if truth_path is not None:
        # Scored at the truth's own resolution (the DAVIS protocol), same frames as the video.
        truth = read_masks(truth_path, replace(options, size=None))
        result.update(score_masks(masks, truth, str(path)))
        truth = upsample_masks(truth, frames.shape[1:3])  # only to outline it on the overlay
    Image.fromarray(overlay(frames, masks, truth)).save(folder / "overlay.jpg", quality=90)
    return result


def settings_of(cfg: MotionMaskConfig, options: ReadOptions, gt_root: Path | None) -> dict:
    return {"masks": asdict(cfg), "read": asdict(options), "eval": gt_root is not None}


def mask_video(
    video: Path,
    out: Path,
    cfg: MotionMaskConfig,
    options: ReadOptions,
    gt_root: Path | None,
    single: bool,
) -> dict:
    """One video's masks in `out/<video>/`, filled in a staging folder and renamed into place
    whole, `result.json` (its statistics and settings) last; returns the statistics."""
    truth = ground_truth_for(gt_root, video_name(video), single) if gt_root else None
    settings = settings_of(cfg, options, gt_root)

    def fill(staging: Path) -> None:
        result = mask_one(video, staging, cfg, options, truth)
        (staging / RESULT_NAME).write_text(json.dumps({**result, "settings": settings}))

    fill_folder_once(out / video_name(video), fill, RESULT_NAME)
    return done_result(out, video, settings)


def done_result(out: Path, video: Path, settings: dict) -> dict | None:
    """A video's statistics when its masks are already under `out`, else None; an error when
    they were made with other settings than `settings`."""
    file = out / video_name(video) / RESULT_NAME
    if not file.is_file():
        return None
    result = json.loads(file.read_text())
    if result.pop("settings", None) != json.loads(json.dumps(settings)):
        raise ConfigError(
            f"{file.parent}: masked with other settings than this run's; give another --out"
        )
    return result


SUMMED = ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay", "JF", "J_centre_box",
          "F_centre_box")  # fmt: skip


def mean_scores(results: list[dict]) -> dict:
    """The means over videos of every per-video score (`mean_J`, `mean_F_recall`, ...), each
    video counting once whatever its length, as the DAVIS benchmark averages."""
    return {f"mean_{key}": float(np.mean([r[key] for r in results])) for key in SUMMED}


def write_masks(
    videos: list[Path],
    out: Path,
    cfg: MotionMaskConfig,
    options: ReadOptions,
    gt_root: Path | None = None,
    progress: bool = True,
    shard: Shard = EVERY_VIDEO,
    runner: Runner | None = None,
) -> dict:
    """Masks for the videos of `shard` not yet under `out`, each in `out/<video>/` (see
    `mask_video`); once every video of `videos` is there, also a combined
    `out/motion_masks.npz` of centre-square frames and masks (the input motion segmentation
    trains on) and the scores in `out/scores.json`. Returns the scores (of the videos done);
    raises VideoFailures, after the others are done, when any video failed."""
    out.mkdir(parents=True, exist_ok=True)
    runner = runner or Runner(progress=progress)
    settings = settings_of(cfg, options, gt_root)
    mine = [v for v in videos if shard.holds(v)]
    results = {video_name(v): r for v in mine if (r := done_result(out, v, settings))}
    todo = [v for v in mine if video_name(v) not in results]
    if results:
        print(f"{len(results)} of {len(mine)} videos already masked in {out}: skipped")
    args = (out, cfg, options, gt_root, len(videos) == 1)
    now, failures = run_videos(todo, mask_video, args, runner, "motion masks")
    results.update(now)
    scores: dict = {"videos": [results[video_name(v)] for v in mine if video_name(v) in results]}
    complete = not failures and all(video_name(v) in results or
                                    done_result(out, v, settings) for v in videos)  # fmt: skip
    if complete:
        scores = combine(videos, out, gt_root is not None, settings)
    if failures:
        report_failures(failures)
        raise VideoFailures(failures, len(todo), len(now))
    return scores


def combine(videos: list[Path], out: Path, scored: bool, settings: dict) -> dict:
    """`motion_masks.npz` and `scores.json` from every video's folder."""
    results, all_frames, all_masks = [], [], []
    for video in videos:
        results.append(done_result(out, video, settings))
        with np.load(out / video_name(video) / "masks.npz") as data:
            all_frames.append(centre_square(data["images"]))
            all_masks.append(centre_square(data["masks"]))
    if len({f.shape[1:] for f in all_frames}) == 1:
        save_npz(
            out / "motion_masks.npz",
            {"images": np.concatenate(all_frames), "masks": np.concatenate(all_masks)},
        )
    scores: dict = {"videos": results, "complete": True}
    if scored:
        scores.update(mean_scores(results))
    scores["mean_fps"] = float(np.mean([r["fps"] for r in results]))
    with written_atomically(out / "scores.json") as temporary:
        temporary.write_text(json.dumps(scores, indent=2))
    return scores
