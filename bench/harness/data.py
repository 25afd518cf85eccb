"""Data the benchmarks read: the data folder (shared, carried to a GPU machine, or made from
the bundled sample for --quick), random subsets and train / validation splits."""

from __future__ import annotations

import lzma
import shutil
import sys
from pathlib import Path

import numpy as np

from selfsup.data import open_source
from selfsup.data.split import split_source, write_rows

from .record import ASSETS, ROOT, SCRATCH, WORK, data_dir, portable, run

QUICK_DATA = WORK / "quick_data"  # laid out like the data folder, from the bundled sample
CARRY_LIMIT_MIB = 64.0  # what travels to a GPU machine: the repository and one inputs folder
VIDEOS = "video/davis2016/JPEGImages/480p"  # under the data folder


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
    """Copy `files` (path in `folder` -> source) into `folder` for a machine without the data:
    files xz-compressed (CIFAR-10's repeated JPEG headers: 58 -> 18 MiB), unpacked there by
    data_root. Refuses a `what` that would not travel with the repository in CARRY_LIMIT_MIB."""
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


def subset_npz(source: Path, count: int | None) -> Path:
    """`count` images of a packed-JPEG .npz drawn at random (seeded; the CIFAR-10 files are
    sorted by class), written once under bench/work/perf; `source` itself when count is None
    or covers it."""
    if count is None:
        return source
    out = SCRATCH / f"{source.parent.name}_{source.stem}_{count}.npz"
    if out.exists():  # written before: the source is not read again
        return out
    images = open_source(source)
    if count >= len(images):
        return source
    # Written whole: rows running at once may ask for the same subset.
    write_rows(images, np.sort(np.random.default_rng(0).permutation(len(images))[:count]), out)
    return out


def carve_validation(source: Path, out_dir: Path, per_class: int) -> tuple[Path, Path]:
    """Split a labelled packed-JPEG .npz into train / validation (the last `per_class` images
    of every class, by file order: `selfsup data split --last`) so a probe is never scored on
    held-out test data."""
    train_path, val_path = out_dir / "train.npz", out_dir / "val.npz"
    if not (train_path.exists() and val_path.exists()):
        split_source(open_source(source), out_dir, per_class, seed=None, progress=False)
    return train_path, val_path
