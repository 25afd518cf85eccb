"""Data the benchmarks read: the data folder (shared, carried to a GPU machine, or made from
the bundled sample for --quick), random subsets, train / validation splits, and the patch
sets of the transitive-invariance runs (video patches beside images)."""

from __future__ import annotations

import lzma
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from .record import ASSETS, ROOT, SCRATCH, WORK, data_dir, portable, run

QUICK_DATA = WORK / "quick_data"  # laid out like the data folder, from the bundled sample
CARRY_LIMIT_MIB = 64.0  # what travels to a GPU machine: the repository and one inputs folder

VIDEOS = "video/davis2016/JPEGImages/480p"  # under the data folder
# The transitive runs' video patches: tracked object patches of the DAVIS clips and of
# vtest's first 200 frames (its walkers are small and slow: a lower residual floor finds them).
VIDEO_PATCHES = {
    "davis": ([VIDEOS], []),
    "vtest": (["video/opencv_vtest/vtest.avi"], ["masks.min_residual=1"]),
}


def data_root(carried: Path, quick: bool) -> Path:
    """Where a GPU script reads its data, laid out like the shared data folder: quick_data()
    with --quick, else the inputs carried to this machine (packed files unpacked, once),
    else $SELFSUP_DATA."""
    if quick:
        return quick_data()
    if not carried.is_dir():
        return data_dir()
    for packed in carried.rglob("*.npz.xz"):
        if not packed.with_suffix("").is_file():
            packed.with_suffix("").write_bytes(lzma.decompress(packed.read_bytes()))
    return carried


def carry(files: dict[str, Path], folder: Path, what: str) -> None:
    """Copy `files` (path in `folder` -> source) into `folder`, to travel to a machine without
    the data: folders as they are, files xz-compressed (every CIFAR-10 image repeats the same
    623 bytes of JPEG header: the two CIFAR-10 files shrink from 58 to about 18 MiB), to be
    unpacked there byte for byte by data_root. Refuses a folder (`what`) that would not travel
    with the repository in CARRY_LIMIT_MIB."""
    for relative, source in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.with_name(target.name + ".xz").write_bytes(lzma.compress(source.read_bytes()))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    tracked = run(["git", "ls-files", "-z"]).stdout.split("\0")
    repo = sum((ROOT / p).stat().st_size for p in tracked if p) / 2**20
    print(f"{what}: {size:.1f} MiB (+ repository {repo:.1f} MiB) in {portable([folder])}")
    if size + repo > CARRY_LIMIT_MIB:
        sys.exit(f"{size + repo:.1f} MiB would not travel in {CARRY_LIMIT_MIB:.0f} MiB")


def quick_data() -> Path:
    """A data folder laid out like the real one from the bundled CIFAR-10 sample: 256
    training and 128 test images per data set, and two synthetic clips, so that every code
    path of a GPU script runs in seconds on a CPU."""
    for seed in (0, 1):
        write_quick_clip(QUICK_DATA / VIDEOS / f"synthetic{seed}", seed)
    layout = {"cifar10/train_jpeg.npz": "train", "cifar10/test_jpeg.npz": "test",
              "tinyimagenet/train_jpeg.npz": "train"}  # fmt: skip
    for relative, split in layout.items():
        target = QUICK_DATA / relative
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            count = 256 if split == "train" else 128
            shutil.copyfile(subset_npz(ASSETS / f"cifar10_sample_{split}.npz", count), target)
    return QUICK_DATA


def write_quick_clip(folder: Path, seed: int, frames: int = 24, size: int = 96) -> None:
    """A clip for --quick: a bright textured square crossing a textured background while the
    camera pans, enough for masks, tracks and patches to exist (two clips give two tracks,
    so intra-only batches have negatives)."""
    from PIL import Image

    if folder.is_dir():
        return
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size, size + frames * 2, 3), dtype=np.uint8)
    square = rng.integers(150, 255, (24, 24, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background[:, t : t + size].copy()  # the camera pans 1 px per frame
        top, left = 20 + seed * 30, 2 + 3 * t  # the square moves 3 px per frame
        frame[top : top + 24, left : left + 24] = square
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)


def write_npz(path: Path, archive, rows: np.ndarray) -> None:
    """Rows `rows` of a labelled packed-JPEG archive as an archive of their own."""
    jpeg, offsets = archive["jpeg"], archive["offsets"]
    blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as file:
        np.savez(
            file,
            jpeg=np.concatenate(blobs),
            offsets=np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
            labels=archive["labels"][rows],
            class_names=archive["class_names"],
        )
    temporary.replace(path)


def subset_npz(source: Path, count: int | None) -> Path:
    """`count` images of a packed-JPEG .npz drawn at random (seeded; the CIFAR-10 files are
    sorted by class), written once under bench/work/perf; `source` itself when count is None
    or covers it."""
    with np.load(source) as archive:
        total = len(archive["offsets"]) - 1
        if count is None or count >= total:
            return source
        out = SCRATCH / f"{source.parent.name}_{source.stem}_{count}.npz"
        if not out.exists():
            write_npz(out, archive, np.sort(np.random.default_rng(0).permutation(total)[:count]))
    return out


def carve_validation(source: Path, out_dir: Path, per_class: int) -> tuple[Path, Path]:
    """Split a labelled packed-JPEG .npz into train / validation (the last `per_class` images
    of every class, by file order) so a probe is never scored on held-out test data."""
    train_path, val_path = out_dir / "train.npz", out_dir / "val.npz"
    if train_path.exists() and val_path.exists():
        return train_path, val_path
    with np.load(source) as archive:
        labels = archive["labels"]
        val_rows = np.concatenate(
            [np.flatnonzero(labels == c)[-per_class:] for c in np.unique(labels)]
        )
        is_val = np.zeros(len(labels), bool)
        is_val[val_rows] = True
        write_npz(train_path, archive, np.flatnonzero(~is_val))
        write_npz(val_path, archive, val_rows)
    return train_path, val_path


def patch_commands(root: Path, out: Path, masks: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """`selfsup video patches` arguments for each VIDEO_PATCHES set whose videos are under
    `root`, written to `out/<set>`, with mask settings `masks` (`selfsup video masks`
    key=value). Where OpenCV lacks its contrib trackers (CSRT), MIL follows the objects."""
    from selfsup.video.track import tracker_available

    tracker = [] if tracker_available("csrt") else ["track.tracker=mil"]
    commands = {}
    for name, (inputs, settings) in VIDEO_PATCHES.items():
        videos = [root / relative for relative in inputs]
        if all(video.exists() for video in videos):
            commands[name] = [
                "video", "patches", *map(str, videos), "--out", str(out / name),
                "--max-frames", "200", *settings, *(f"masks.{m}" for m in masks), *tracker,
            ]  # fmt: skip
    return commands


def merge_patches(video_files: list[Path], images: Path, out: Path, size: int) -> dict:
    """One patch set: the video patches resized to `size`, then the labelled images (each its
    own track, `patch_labels` their class; video patches get -1)."""
    from selfsup.eval.protocol import load_labelled

    parts, counts = [], {}
    track_offset = video_offset = 0
    for file in video_files:
        with np.load(file) as video:
            pixels = torch.from_numpy(video["images"]).permute(0, 3, 1, 2).float()
            small = torch.nn.functional.interpolate(pixels, size=size, antialias=True,
                                                    mode="bilinear")  # fmt: skip
            n = len(pixels)
            parts.append({
                "images": small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(),
                "track": video["track"] + track_offset,
                "frame": video["frame"],
                "video": video["video"] + video_offset,
                "patch_labels": np.full(n, -1),
            })  # fmt: skip
            track_offset = int(parts[-1]["track"].max()) + 1
            video_offset = int(parts[-1]["video"].max()) + 1
            counts[file.parent.name] = {"patches": n, "tracks": len(np.unique(video["track"]))}
    dataset = load_labelled(str(images), size, progress=False)
    n = len(dataset.labels)
    parts.append({
        "images": dataset.images.permute(0, 2, 3, 1).numpy(),
        "track": np.arange(n) + track_offset,
        "frame": np.zeros(n, np.int64),
        "video": np.full(n, -1),
        "patch_labels": dataset.labels.numpy(),
    })  # fmt: skip
    counts["images"] = {"patches": n, "source": portable([images])}
    if not out.is_file():
        np.savez(out, **{key: np.concatenate([p[key] for p in parts]) for key in parts[0]})
    return counts
