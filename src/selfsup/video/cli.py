"""`selfsup video masks | patches | track`: the video tooling on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfsup.config import ConfigError, build, merge, parse_overrides
from selfsup.outputs import nothing_half_written, output_folder

EXAMPLES = """examples:
  selfsup video masks clip.mp4 --out masks/
  selfsup video masks DAVIS/JPEGImages/480p --eval DAVIS/Annotations/480p --out masks/
  selfsup video masks clip.mp4 --out masks/ min_residual=2 temporal_window=5
  selfsup video masks clip.mp4 --out masks/ method=residual
  selfsup video patches videos/ --out patches/ --workers 2 track.tracker=kcf
  selfsup video patches videos/ --out patches/ --shard $SLURM_ARRAY_TASK_ID/100
  selfsup video patches videos/ --out patches/ --ray auto
  selfsup video patches long_videos/ --out patches/ --ray auto --chunk-frames 300
  selfsup video track DAVIS/JPEGImages/480p --eval DAVIS/Annotations/480p --out tracks/
"""


def add_reading_options(p: argparse.ArgumentParser, default_size: int | None) -> None:
    p.add_argument(
        "videos",
        nargs="+",
        metavar="VIDEO",
        help="video files, frame folders, .npz clips, or folders of them",
    )
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument(
        "--size",
        type=int,
        default=default_size,
        help=f"resize frames to this shorter side (default {default_size})",
    )
    p.add_argument("--stride", type=int, default=1, help="keep every N-th frame")
    p.add_argument("--max-frames", type=int, help="use at most this many frames per video")
    p.add_argument(
        "--keep-partial",
        action="store_true",
        help="use the frames read from a truncated video instead of failing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_shard(text: str):
    from selfsup.video.jobs import parse_shard

    return parse_shard(text)


def check_ray_address(text: str) -> str:
    from selfsup.video.jobs import check_ray_address

    return check_ray_address(text)


def add_mining_options(p: argparse.ArgumentParser) -> None:
    """--shard, --ray, --task-memory (checked by selfsup.video.jobs, imported only when used:
    the parsers answer --help without importing torch)."""
    p.add_argument(
        "--shard",
        type=parse_shard,
        metavar="I/N",
        help="mine only the I-th of N disjoint parts of the videos (I from 0 to N-1, e.g. "
        "$SLURM_ARRAY_TASK_ID/N with --array=0-<N-1>), chosen by a hash of each video's name: "
        "N jobs into one --out mine every video once",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        type=check_ray_address,
        metavar="ADDRESS",
        help="run one task per video on a Ray cluster (needs pip install 'selfsup[ray]'): "
        "ADDRESS is HOST:PORT or ray://HOST:PORT, `auto` (the default: $RAY_ADDRESS or the "
        "cluster started here with `ray start --head`) or `local` (a cluster of this machine's "
        "cores, for trying it). --out must be a folder every node sees",
    )
    p.add_argument(
        "--task-memory",
        type=float,
        default=2.0,
        metavar="GB",
        help="memory each Ray task asks for (default 2 GiB: a 300-frame video at 240 px "
        "peaks at 1.3-1.8; more for longer videos); Ray runs no more tasks on a node than "
        "fit its memory",
    )


def add_video_parser(commands: argparse._SubParsersAction) -> None:
    video = commands.add_parser(
        "video",
        help="motion masks, moving-object patches and tracks from videos",
        description="Video tooling for motion segmentation and transitive invariance. "
        "Algorithm settings are key=value overrides (see the docs' video page).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = video.add_subparsers(dest="video_command", required=True, metavar="SUBCOMMAND")
    masks = sub.add_parser(
        "masks",
        help="unsupervised motion masks (PNG, .npz, overlay)",
        description="Masks of the moving objects of every frame: whole objects, from motion "
        "completed by appearance (method=object, the default), or only the pixels the "
        "camera's motion does not explain (method=residual). "
        "Writes OUT/<video>/masks/*.png, masks.npz and overlay.jpg, "
        "OUT/motion_masks.npz (all videos, centre squares: the data of "
        "the motion-segmentation task) and OUT/scores.json. Training reads OUT itself: "
        "`train motion-segmentation --data OUT`, `train multitask --videos OUT`. Each video's "
        "folder appears whole; a rerun skips the videos done and masks the rest. The combined "
        "files are written once every video is done.",
    )
    add_reading_options(masks, 240)
    add_mining_options(masks)
    masks.add_argument(
        "--eval",
        metavar="GT",
        help="ground-truth masks: a folder of PNGs "
        "(one video) or of per-video folders (DAVIS Annotations/480p)",
    )
    patches = sub.add_parser(
        "patches",
        help="tracked moving-object patch dataset",
        description="Proposals from motion masks, tracked forward; "
        "writes each video's patches to OUT/videos/<video>.npz (whole, or not at all: a "
        "rerun skips the videos done and mines the rest) and, once every video is done, "
        "OUT/manifest.json (the shards, one patch set), summary.json, preview.jpg and, up to "
        "100,000 patches, the combined copy OUT/patches.npz. Other commands read OUT "
        "itself: `graph build --patches OUT` (the shards), `train TASK --data OUT` (the copy).",
    )
    add_reading_options(patches, 240)
    add_mining_options(patches)
    patches.add_argument(
        "--workers", type=int, default=1, help="videos processed in parallel processes (default 1)"
    )
    patches.add_argument(
        "--chunk-frames",
        type=int,
        metavar="N",
        help="mine a video of more than N kept frames in chunks of N, one task each (the "
        "setting chunk_frames): a task's memory is then bounded by N frames, not by the "
        "video's length; tracks end at a chunk's end (default: whole videos)",
    )
    track = sub.add_parser(
        "track",
        help="score proposals and tracks against ground truth",
        description="Run the patch pipeline's proposals and tracker on "
        "videos with ground-truth masks and report box IoU along tracks "
        "and how long tracks survive; writes OUT/tracking.json.",
    )
    add_reading_options(track, 240)
    track.add_argument("--eval", metavar="GT", required=True, help="ground-truth masks")
    for p in (masks, patches, track):
        p.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="algorithm settings, e.g. min_residual=2 (masks) or "
            "masks.min_residual=2 track.tracker=kcf (patches, track)",
        )


def settings(cls: type, overrides: list[str], flags: dict | None = None):
    """`cls` from the typed values of command-line flags, then `key=value` overrides."""
    return build(cls, merge(flags or {}, parse_overrides(overrides)))


def reading(args: argparse.Namespace):
    from selfsup.video.reader import ReadOptions

    for name in ("size", "stride", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    return ReadOptions(args.stride, args.size, args.max_frames, args.keep_partial)


def check_truth(gt: Path, videos: list[Path]) -> None:
    """Every video has ground-truth masks under `gt` (before anything is computed)."""
    from selfsup.video.masks import ground_truth_for
    from selfsup.video.reader import VideoError, frame_files, video_name

    if not gt.is_dir():
        raise ConfigError(f"--eval: {gt} is not a folder of ground-truth masks")
    for path in videos:
        where = ground_truth_for(gt, video_name(path), len(videos) == 1)
        if not where.is_dir() or not frame_files(where):
            raise VideoError(
                f"{gt}: no ground-truth masks for video {video_name(path)} (expected mask "
                f"images in {where})"
            )


def runner(args: argparse.Namespace, workers: int = 1):
    """Where the videos run, checked before any is read: --ray needs ray installed."""
    from selfsup.video.jobs import Runner, import_ray

    if args.task_memory <= 0:
        raise ConfigError(f"--task-memory: must be > 0 GiB, got {args.task_memory}")
    if args.ray is not None:
        import_ray()
    return Runner(workers, args.ray, args.task_memory, not args.quiet)


def keeping_done(out: str, run):
    """`run()` under nothing_half_written, except that when some videos failed the videos
    done stay (whole, each on its own): a rerun retries only the failed."""
    from selfsup.video.jobs import VideoFailures

    failed = None
    with nothing_half_written(out):
        try:
            return run()
        except VideoFailures as err:
            if not err.done:
                raise
            failed = err
    raise failed


def shard_line(args: argparse.Namespace, result: dict, what: str) -> None:
    if not result.get("complete"):
        print(
            f"shard {args.shard}: {len(result['videos'])} videos {what} in {args.out}; the "
            "combined files are written by the run that finishes the last video (or rerun "
            "without --shard: it skips what is done)"
        )


def command_masks(args: argparse.Namespace) -> None:
    from selfsup.video.jobs import EVERY_VIDEO
    from selfsup.video.masks import write_masks
    from selfsup.video.motion import MotionMaskConfig
    from selfsup.video.reader import find_videos

    cfg = settings(MotionMaskConfig, args.overrides)
    gt = Path(args.eval) if args.eval else None
    videos, options, where = find_videos(args.videos), reading(args), runner(args)
    if gt is not None:
        check_truth(gt, videos)
    shard = args.shard or EVERY_VIDEO
    scores = keeping_done(
        args.out,
        lambda: write_masks(videos, Path(args.out), cfg, options, gt, not args.quiet, shard, where),
    )
    for r in scores["videos"]:
        line = f"{r['video']:24s} {r['frames']:5d} frames {r['fps']:6.1f} frames/s"
        if "J" in r:
            line += "  " + davis_line(r)
        print(line)
        for rule in r["rules"]:  # clip-wide rules that touched frames, and why
            print(f"    {rule['rule']}: {rule['frames']} frames: {rule['why']}")
    if "mean_J" in scores:
        means = {key[5:]: value for key, value in scores.items() if key.startswith("mean_")}
        print(f"{'mean':24s} {'':25s}  {davis_line(means)}")
    if scores.get("complete"):
        print(f"wrote {args.out}/scores.json")
    else:
        shard_line(args, scores, "masked")


def davis_line(r: dict) -> str:
    """The DAVIS scores of one video (or their means): J and F (mean, recall, decay), J&F,
    and the centre box's J and F."""
    return (
        f"J {r['J']:.3f} (recall {r['J_recall']:.2f}, decay {r['J_decay']:+.3f})  "
        f"F {r['F']:.3f} (recall {r['F_recall']:.2f}, decay {r['F_decay']:+.3f})  "
        f"J&F {r['JF']:.3f}  centre box J {r['J_centre_box']:.3f} F {r['F_centre_box']:.3f}"
    )


def patch_settings(args: argparse.Namespace):
    from selfsup.video.patches import PatchConfig

    flags = {"size": args.size, "stride": args.stride}
    if args.max_frames:
        flags["max_frames"] = args.max_frames
    if getattr(args, "chunk_frames", None) is not None:  # `video track` has no chunks
        flags["chunk_frames"] = args.chunk_frames
    return settings(PatchConfig, args.overrides, flags)


def command_patches(args: argparse.Namespace) -> None:
    from selfsup.video.jobs import EVERY_VIDEO
    from selfsup.video.patches import extract_patches
    from selfsup.video.reader import find_videos

    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    videos, cfg, where = find_videos(args.videos), patch_settings(args), runner(args, args.workers)
    shard = args.shard or EVERY_VIDEO
    summary = keeping_done(
        args.out,
        lambda: extract_patches(
            videos, Path(args.out), cfg, args.workers, not args.quiet, shard, where
        ),
    )
    videos = len({piece["video"] for piece in summary["videos"]})
    chunked = sum("first_frame" in piece for piece in summary["videos"])
    print(
        f"{summary['patches']} patches in {summary['tracks']} tracks from {videos} "
        f"video{'s' * (videos != 1)}"
        + (f" ({chunked} chunks)" if chunked else "")
        + f" ({summary['mined_now']} mined now) in {summary['seconds']} s"
        + (f"; wrote {args.out}/manifest.json" if summary["complete"] else "")
    )
    shard_line(args, summary, "mined")


def command_track(args: argparse.Namespace) -> None:
    from selfsup.video.evaluate import read_masks, score_tracking
    from selfsup.video.masks import ground_truth_for
    from selfsup.video.patches import seed_tracks
    from selfsup.video.reader import MOTION_FRAMES, VideoError, find_videos, read_video, video_name
    from selfsup.video.segment import motion_masks

    cfg = patch_settings(args)
    options = reading(args)
    videos = find_videos(args.videos)
    check_truth(Path(args.eval), videos)
    results = []
    for path in videos:
        frames = read_video(path, options, min_frames=MOTION_FRAMES)
        truth_path = ground_truth_for(Path(args.eval), video_name(path), len(videos) == 1)
        truth = read_masks(truth_path, options, shape=frames.shape[1:3])
        if len(truth) != len(frames):
            raise VideoError(
                f"{truth_path}: {len(truth)} ground-truth masks for the {len(frames)} frames of "
                f"{path}; give one mask per frame"
            )
        masks = motion_masks(frames, cfg.masks)
        paths = seed_tracks(frames, masks, cfg)
        scores = score_tracking(frames, masks, paths, truth, cfg.track)
        result = {"video": video_name(path), **scores}
        results.append(result)
        ft, pr = result.get("from_truth", {}), result["proposals"]
        print(
            f"{result['video']:24s} seeded by truth: IoU {ft.get('mean_iou', float('nan')):.3f}"
            f" survival {ft.get('survival', float('nan')):.2f} | proposals: "
            f"{pr['on_object']}/{pr['tracks']} on object, IoU {pr['mean_iou'] or 0:.3f}, "
            f"length {pr['mean_length'] or 0:.1f}"
        )
    summary = {
        "videos": results,
        "mean_iou_from_truth": float(
            np.mean([r["from_truth"]["mean_iou"] for r in results if "from_truth" in r])
        ),
        "mean_survival_from_truth": float(
            np.mean([r["from_truth"]["survival"] for r in results if "from_truth" in r])
        ),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking.json").write_text(json.dumps(summary, indent=2))
    print(
        f"mean (seeded by truth): IoU {summary['mean_iou_from_truth']:.3f}, survival "
        f"{summary['mean_survival_from_truth']:.2f}; wrote {out}/tracking.json"
    )


def command_video(args: argparse.Namespace) -> None:
    {"masks": command_masks, "patches": command_patches, "track": command_track}[
        args.video_command
    ](args)
