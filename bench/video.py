"""Video benchmark: motion-mask J on the DAVIS 2016 clips (beside the centre-box baseline and
the earlier residual method), tracking against DAVIS boxes, and throughput of masks, tracking
and the patch pipeline at 240 px (shorter side), with 1 and 2 worker processes.

    python bench/video.py          # ~8 min on 2 cores
    python bench/video.py --loo    # + leave-one-clip-out choice of the mask settings (~4 min)
    python bench/video.py --davis --loo   # the DAVIS table alone (bench/results/video_davis.json)

Masks are scored as the DAVIS 2016 benchmark scores them (selfsup.video.evaluate), also on
stress sets made from the same clips (followed, half, fast, static scene, walkers,
compressed: docs/video.md says what each tests and gives the figures); the true masks place
the followed window only. `davis_table` has a row per DAVIS 2016 val sequence, blank where
held out, and the published unsupervised methods' means. Data comes from `$SELFSUP_DATA`;
results go to `bench/results/video.json` with the commands and the machine.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from harness.record import RESULTS, WORK, data_dir, machine, parser, portable, run, write_json

FOLLOW_WINDOW = 0.7  # the followed window's side, as a share of the frame's
# Leave-one-out grid: the settings with the most effect (see docs/video.md).
LOO_GRID = {"floor_fraction": (0.5, 0.6, 0.7), "memory": (0.3, 0.5, 0.9)}
WALKER_CONTRAST = 30  # colour distance (of 255) from the median background that marks a walker
# The 20 sequences of DAVIS 2016 val; those missing from the data are held out (SOURCES.md).
DAVIS_2016_VAL = (
    "blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "car-shadow", "cows",
    "dance-twirl", "dog", "drift-chicane", "drift-straight", "goat", "horsejump-high",
    "kite-surf", "libby", "motocross-jump", "paragliding-launch", "parkour", "scooter-black",
    "soapbox",
)  # fmt: skip
# Mean J over the 20 val sequences of the unsupervised methods in Perazzi et al., "A Benchmark
# Dataset and Evaluation Methodology for Video Object Segmentation", CVPR 2016. Their F,
# recall, decay and per-sequence figures are left out: not checked against the paper here.
PUBLISHED = {
    "FST (Papazoglou & Ferrari, ICCV 2013)": {"J": 0.558},
    "NLC (Faktor & Irani, BMVC 2014)": {"J": 0.551},
}
DAVIS_COLUMNS = ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay", "JF", "J_centre_box",
                 "F_centre_box", "frames_per_s")  # fmt: skip


def write_followed_clips(frames_root: Path, truth_root: Path, out: Path) -> tuple[Path, Path]:
    """Each clip cropped to a window that follows its object (the true mask's centroid,
    smoothed over 5 frames), resized back to 240 px: frames and true masks as PNGs."""
    import cv2

    from selfsup.video.evaluate import read_masks
    from selfsup.video.reader import ReadOptions, read_video

    images, masks = out / "JPEGImages", out / "Annotations"
    for clip in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        if (masks / clip.name).is_dir():
            continue
        frames = read_video(clip, ReadOptions(size=240))
        truth = read_masks(truth_root / clip.name, ReadOptions(size=240), frames.shape[1:3])
        count, height, width = truth.shape
        centres = []
        for mask in truth:
            ys, xs = np.nonzero(mask)
            centres.append((ys.mean(), xs.mean()) if len(ys) else (height / 2, width / 2))
        padded = np.pad(np.array(centres), ((2, 2), (0, 0)), mode="edge")
        centres = np.stack([np.convolve(padded[:, i], np.ones(5) / 5, "valid") for i in (0, 1)], 1)
        side_y, side_x = int(FOLLOW_WINDOW * height), int(FOLLOW_WINDOW * width)
        (images / clip.name).mkdir(parents=True, exist_ok=True)
        (masks / clip.name).mkdir(parents=True, exist_ok=True)
        for t in range(count):
            top = int(np.clip(centres[t, 0] - side_y / 2, 0, height - side_y))
            left = int(np.clip(centres[t, 1] - side_x / 2, 0, width - side_x))
            crop = frames[t, top : top + side_y, left : left + side_x]
            crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
            mask = truth[t, top : top + side_y, left : left + side_x].astype(np.uint8) * 255
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(images / clip.name / f"{t:05d}.png"), crop[..., ::-1])
            cv2.imwrite(str(masks / clip.name / f"{t:05d}.png"), mask)
    return images, masks


def write_compressed_clips(frames_root: Path, out: Path) -> Path:
    """Each clip at 240 px written through OpenCV's MPEG-4 Part 2 encoder (mp4v, at its
    default quality, 15 frames/s): video as users' own is, blockier than DAVIS's JPEG frames.
    Returns the folder of .mp4 files, named as the clips."""
    import cv2

    from selfsup.video.reader import ReadOptions, read_video

    if out.is_dir():
        return out
    staging = out.with_name(out.name + ".part")
    staging.mkdir(parents=True, exist_ok=True)
    for clip in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        frames = read_video(clip, ReadOptions(size=240))
        height, width = frames.shape[1:3]
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        writer = cv2.VideoWriter(str(staging / f"{clip.name}.mp4"), fourcc, 15, (width, height))
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
    staging.rename(out)
    return out


def write_walker_truth(video: Path, out: Path) -> Path:
    """Pseudo-truth masks (PNGs at 240 px) of the walkers in a fixed camera's video: pixels
    whose colour is over WALKER_CONTRAST from the median of all frames, cleaned of specks."""
    import cv2

    from selfsup.video.reader import ReadOptions, read_video

    if out.is_dir():
        return out
    frames = read_video(video, ReadOptions(size=240))
    background = np.median(frames, axis=0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    staging = out.with_name(out.name + ".part")
    staging.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        far = np.abs(frame - background).max(axis=-1) > WALKER_CONTRAST
        mask = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_OPEN, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        cv2.imwrite(str(staging / f"{t:05d}.png"), mask * 255)
    staging.rename(out)
    return out


def mask_scores(folder: Path) -> dict:
    """A masks command's scores.json, rounded: per video and their means, the DAVIS measures
    (at the truth's resolution) and frames/s."""
    scores = json.loads((folder / "scores.json").read_text())
    measures = DAVIS_COLUMNS[:-1]
    return {
        "per_video": {
            v["video"]: {**{k: round(v[k], 3) for k in measures},
                         "frames_per_s": round(v["fps"], 1)}
            for v in scores["videos"]
        },
        **{f"mean_{k}": round(scores[f"mean_{k}"], 3) for k in measures},
        "mean_frames_per_s": round(scores["mean_fps"], 1),
    }  # fmt: skip


def davis_table(scored: dict, loo: dict | None = None) -> str:
    """The twenty DAVIS 2016 val sequences as rows (blank where a sequence is held out), the
    mean over the measured ones, and the published methods' cited means."""
    columns = [*DAVIS_COLUMNS, *(["J_loo"] if loo else [])]
    head = f"{'sequence':48s}" + "".join(f"{c:>13s}" for c in columns)
    lines = [head, "-" * len(head)]

    def row(name: str, values: dict) -> str:
        cells = (values.get(c) for c in columns)
        return f"{name:48s}" + "".join(f"{v:13.3f}" if v is not None else f"{'':>13s}"
                                       for v in cells)  # fmt: skip

    per_video = scored["per_video"]
    for sequence in DAVIS_2016_VAL:
        values = dict(per_video.get(sequence, {}))
        if loo and sequence in loo["per_video"]:
            values["J_loo"] = loo["per_video"][sequence]["J"]
        held_out = "" if sequence in per_video else "  (held out)"
        lines.append(row(sequence + held_out, values))
    others = sorted(set(per_video) - set(DAVIS_2016_VAL))
    lines += [row(name, per_video[name]) for name in others]
    means = {c: scored.get(f"mean_{c}") for c in DAVIS_COLUMNS}
    if loo:
        means["J_loo"] = loo["mean_J"]
    lines.append(row(f"mean of {len(per_video)} measured", means))
    lines += [row(f"{name} (20 seq.)", values) for name, values in PUBLISHED.items()]
    return "\n".join(lines)


def empty_frame_scores(folder: Path) -> dict:
    """A clip where nothing moves: the share of frames whose mask is empty (J against an
    empty truth) and the mean and largest share of a frame masked."""
    clip = next(p for p in folder.iterdir() if (p / "masks.npz").is_file())
    with np.load(clip / "masks.npz") as data:
        covered = (data["masks"] > 0).mean(axis=(1, 2))
    scores = json.loads((folder / "scores.json").read_text())
    return {
        "clip": clip.name, "frames": len(covered),
        "empty_frames": round(float((covered == 0).mean()), 3),
        "mean_area": round(float(covered.mean()), 4),
        "largest_area": round(float(covered.max()), 3),
        "frames_per_s": round(scores["mean_fps"], 1),
    }  # fmt: skip


def leave_one_out(masks_command: list[str], out: Path) -> dict:
    """Per clip: the grid's settings that score best on the other clips, and the J they get
    on this one (never seen while choosing)."""
    grid = [dict(zip(LOO_GRID, values)) for values in itertools.product(*LOO_GRID.values())]
    per_setting = []
    for i, setting in enumerate(grid):
        folder = out / f"loo_{i}"
        overrides = [f"{k}={v}" for k, v in setting.items()]
        run([*masks_command, "--out", str(folder), *overrides])
        per_setting.append(mask_scores(folder)["per_video"])
        shutil.rmtree(folder)  # the masks themselves (~130 MB a setting) are not needed
    clips = list(per_setting[0])
    result = {"grid": {k: list(v) for k, v in LOO_GRID.items()}, "per_video": {}}
    for clip in clips:
        others = [c for c in clips if c != clip]
        best = max(
            range(len(grid)), key=lambda i: np.mean([per_setting[i][c]["J"] for c in others])
        )
        result["per_video"][clip] = {"chosen": grid[best], "J": per_setting[best][clip]["J"],
                                     "F": per_setting[best][clip]["F"]}  # fmt: skip
    for measure in ("J", "F"):
        chosen = [r[measure] for r in result["per_video"].values()]
        result[f"mean_{measure}"] = round(float(np.mean(chosen)), 3)
    # Every setting's mean over all the clips: where the default stands in the grid.
    result["mean_J_per_setting"] = [
        {**setting, "J": round(float(np.mean([scores[c]["J"] for c in clips])), 3)}
        for setting, scores in zip(grid, per_setting)
    ]
    return result


def davis_result(base: list[str], out: Path) -> dict:
    """--davis: the object masks of the DAVIS clips alone."""
    seconds = round(run([*base, "--out", str(out / "masks_davis")]).seconds, 1)
    return {
        "resolution": "masks at 240 px shorter side, scored at the truth's 480p",
        "motion_masks": mask_scores(out / "masks_davis"),
        "published": PUBLISHED,
        "seconds": seconds,
        "commands": {"masks": portable([*base, "--out", "OUT"])},
        "machine": machine(),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--loo", action="store_true", help="also run the leave-one-out grid")
    p.add_argument("--davis", action="store_true", help="only the DAVIS clips' masks and table")
    args = p.parse_args()
    davis = data_dir() / "video" / "davis2016"
    frames, truth = davis / "JPEGImages" / "480p", davis / "Annotations" / "480p"
    selfsup = [sys.executable, "-m", "selfsup", "video"]
    base = [*selfsup, "masks", str(frames), "--eval", str(truth), "--quiet"]  # of the DAVIS masks
    out = WORK / "video"
    shutil.rmtree(out, ignore_errors=True)  # a measurement afresh: outputs are not reused
    result = davis_result(base, out) if args.davis else full_result(selfsup, frames, truth, out)
    if args.loo:
        result["leave_one_out"] = leave_one_out(base, out)
        result["commands"]["leave_one_out"] = portable([*base, "--out", "OUT", "KEY=VALUE..."])
    write_json(RESULTS / ("video_davis.json" if args.davis else "video.json"), result)
    if not args.davis:
        print(json.dumps({k: result[k] for k in ("stress", "patches")}, indent=2))
    print(davis_table(result["motion_masks"], result.get("leave_one_out")))


def full_result(selfsup: list[str], frames: Path, truth: Path, out: Path) -> dict:
    """Every set's masks with both methods, tracking and the patch pipeline's throughput."""
    vtest = data_dir() / "video" / "opencv_vtest" / "vtest_first200_384x288.npz"
    still = data_dir() / "depth" / "7scenes_redkitchen_200.npz"  # packed JPEG frames + depth
    followed, followed_truth = write_followed_clips(frames, truth, out / "followed")
    walkers = data_dir() / "video" / "opencv_vtest" / "vtest.avi"
    walker_truth = write_walker_truth(walkers, out / "walker_truth")
    compressed = write_compressed_clips(frames, out / "compressed")

    def masks(name: str, source: Path, gt: Path | None, *extra: str) -> dict[str, list[str]]:
        """Both methods on one set: `name` (object masks, the default) and `name_residual`
        (the earlier method); gt None: no ground truth to score against."""
        scored = ["--eval", str(gt)] if gt is not None else []
        return {
            name + suffix: [*selfsup, "masks", str(source), *scored, "--out",
                            str(out / (name + suffix)), "--quiet", *extra, *method]
            for suffix, method in (("", []), ("_residual", ["method=residual"]))
        }  # fmt: skip

    commands = {
        **masks("masks", frames, truth),
        **masks("masks_followed", followed, followed_truth),
        **masks("masks_half", frames, truth, "--size", "120", "flow_size=120"),
        **masks("masks_fast", frames, truth, "--stride", "2"),
        **masks("masks_compressed", compressed, truth),
        **masks("masks_walkers", walkers, walker_truth),
        **masks("static_scene", still, None),
        "track": [*selfsup, "track", str(frames), "--eval", str(truth), "--out",
                  str(out / "track"), "--quiet"],
        # Pedestrians at 10 fps move ~1 px per frame at 240 px: the patch figures have
        # always been measured with this lower floor (the object masks' own floor now comes
        # down by itself at a still camera; method=residual's does not).
        **{f"patches_{n}_worker{'s' * (n > 1)}": [
            *selfsup, "patches", str(frames), str(vtest), "--out", str(out / f"patches{n}"),
            "--workers", str(n), "--quiet", "masks.min_residual=1"] for n in (1, 2)},
    }  # fmt: skip
    seconds = {name: round(run(command).seconds, 1) for name, command in commands.items()}
    scored = {name: mask_scores(out / name) for name in commands if name.startswith("masks")}
    for name, result in scored.items():  # the earlier method's J and speed beside ours
        old = scored.get(f"{name}_residual")
        if old is not None:
            for video, row in result["per_video"].items():
                row["J_residual"] = old["per_video"][video]["J"]
                row["frames_per_s_residual"] = old["per_video"][video]["frames_per_s"]
            result["mean_J_residual"] = old["mean_J"]
            result["mean_frames_per_s_residual"] = old["mean_frames_per_s"]
    tracking = json.loads((out / "track" / "tracking.json").read_text())
    patches = json.loads((out / "patches2" / "summary.json").read_text())
    total_frames = sum(v["frames"] for v in patches["videos"])
    result = {
        "resolution": "240 px shorter side",
        "motion_masks": scored["masks"],
        "motion_masks_method": "object (default); J_residual: method=residual, the earlier one",
        "stress": {
            "followed": scored["masks_followed"],
            "half_resolution": scored["masks_half"],
            "fast": scored["masks_fast"],
            "compressed": scored["masks_compressed"],
            "walkers": scored["masks_walkers"],
            "static_scene": {
                "object": empty_frame_scores(out / "static_scene"),
                "residual": empty_frame_scores(out / "static_scene_residual"),
            },
        },
        "tracking": {
            "mean_iou_seeded_by_truth": round(tracking["mean_iou_from_truth"], 3),
            "mean_survival_seeded_by_truth": round(tracking["mean_survival_from_truth"], 3),
            "per_video": {v["video"]: {"from_truth": v.get("from_truth"),
                                       "proposals": v["proposals"]}
                          for v in tracking["videos"]},
        },
        "patches": {
            "videos": len(patches["videos"]), "frames": total_frames,
            "patches": patches["patches"], "tracks": patches["tracks"],
            "frames_per_s_1_worker": round(total_frames / seconds["patches_1_worker"], 1),
            "frames_per_s_2_workers": round(total_frames / seconds["patches_2_workers"], 1),
        },
        "seconds": seconds,
        "commands": {name: portable(c) for name, c in commands.items()},
        "machine": machine(),
    }  # fmt: skip
    return result


if __name__ == "__main__":
    main()
