"""The rows of bench/gpu_results.yaml (run by gpu_results.py on a GPU, run.py's suites on a
CPU): the data a row reads, its `selfsup train` command and schedule, the transitive rows'
patch graph."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from .data import QUICK_DATA, VIDEOS, carve_validation
from .record import ROOT, WORK, portable, run, selfsup

SOURCES = {
    "cifar10": {"train": "cifar10/train_jpeg.npz", "test": "cifar10/test_jpeg.npz"},
    # Tiny ImageNet's labelled test split is not staged: the last 50 training images of each
    # class are carved off as the test set.
    "tinyimagenet": {"train": "tinyimagenet/train_jpeg.npz"},
}
TINY_TEST_PER_CLASS = 50
# The transitive runs' video patches: tracked object patches of the DAVIS clips and of
# vtest's first 200 frames (its walkers are small and slow: a lower residual floor finds them).
VIDEO_PATCHES = {
    "davis": ([VIDEOS], []),
    "vtest": (["video/opencv_vtest/vtest.avi"], ["masks.min_residual=1"]),
}


@dataclass(frozen=True)
class Row:
    """One line of the table, as bench/gpu_results.yaml describes it."""

    label: str
    data: str = "cifar10"
    train: tuple[str, ...] = ()
    random_of: str | None = None
    epochs: float | None = None
    videos: bool = False
    masks: tuple[str, ...] = ()
    graph: bool = False


def load_rows(path: Path) -> tuple[dict[str, Row], list[dict], dict[str, tuple[str, ...]]]:
    """The rows and the claims of a rows file, and its argument groups (the `@group`
    arguments of rows and groups spelled out)."""
    spec = yaml.safe_load(path.read_text())

    def spelled(args: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for arg in args:
            out += spelled(spec["groups"][arg[1:]]) if arg.startswith("@") else [arg]
        return tuple(out)

    rows = {}
    for name, row in spec["rows"].items():
        lists = {key: spelled(row.get(key, [])) for key in ("train", "masks")}
        rows[name] = Row(**{**row, **lists})
    groups = {name: spelled(args) for name, args in spec["groups"].items()}
    return rows, spec["claims"], groups


ROWS, CLAIMS, GROUPS = load_rows(ROOT / "bench" / "gpu_results.yaml")


def data_paths(row: Row, root: Path) -> dict[str, Path]:
    """Pretraining, kNN memory bank and probe training set (the training split) and the test
    set under data folder `root`; Tiny ImageNet's carved from its training images (once, in
    bench/work, or beside the quick data)."""
    paths = {split: root / relative for split, relative in SOURCES[row.data].items()}
    if "test" not in paths:
        quick = root == QUICK_DATA
        folder = (QUICK_DATA if quick else WORK) / f"{row.data}_split"
        per_class = 2 if quick else TINY_TEST_PER_CLASS
        paths["train"], paths["test"] = carve_validation(paths["train"], folder, per_class)
    if row.videos:
        paths["videos"] = root / VIDEOS
    return paths


def train_argv(
    row: Row, paths: dict[str, Path], folder: Path, steps: int, extra: tuple[str, ...] = ()
) -> list[str]:
    """The row's `selfsup train` arguments; `extra` overrides come last, so they win."""
    videos = ["--videos", str(paths["videos"])] if row.videos else []
    if row.graph:  # trains on the graph's patches; evaluated on the images like every row
        data = ["--data", str(paths["patches"]), "--graph", str(paths["graph"])]
    else:
        data = ["--data", str(paths["train"])]
    options = [*data, *videos, "--out", str(folder), "--steps", str(steps)]
    return ["train", *row.train, *options, *extra]


def metrics(folder: Path) -> list[dict]:
    """The lines of a run's metrics.jsonl."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def batch_of(folder: Path) -> int:
    return yaml.safe_load((folder / "config.yaml").read_text())["data"]["batch_size"]


def planned_steps(
    row: Row, paths: dict[str, Path], trial: Path, minutes: float, extra: tuple[str, ...] = ()
) -> int:
    """Steps of the row's schedule: its epochs, or what `minutes` of training afford at the
    rate a short trial run (in folder `trial`) measures: with rows running at once, the rate
    they leave it."""
    with np.load(paths["train"]) as archive:
        images = len(archive["labels"])
    if row.epochs:
        batch = next(int(a.split("=")[1]) for a in row.train if a.startswith("data.batch_size="))
        return int(row.epochs * (images // batch))
    shutil.rmtree(trial, ignore_errors=True)
    selfsup(*train_argv(row, paths, trial, 40, extra), "train.log_every=20")
    rate = metrics(trial)[-1]["images_per_sec"]  # the second window: warm-up excluded
    batch = batch_of(trial)
    shutil.rmtree(trial)
    return max(1, int(minutes * 60 * rate / batch))


def graph_set(masks: tuple[str, ...]) -> str:
    """The name of the patch graph mined with mask settings `masks`: its folder in the
    inputs and on the GPU machine, and its file when kept (`<name>-graph.npz`)."""
    return "-".join(["transitive", *(setting.split("=", 1)[1] for setting in masks)])


def video_patches(root: Path, folder: Path, masks: tuple[str, ...] = ()) -> dict[str, list]:
    """`selfsup video patches` with mask settings `masks` on each VIDEO_PATCHES set under
    `root`, into `folder`/<set> (once); the commands, by set. MIL tracks without CSRT."""
    from selfsup.video.track import tracker_available

    tracker = [] if tracker_available("csrt") else ["track.tracker=mil"]
    commands = {}
    for name, (inputs, settings) in VIDEO_PATCHES.items():
        videos = [root / relative for relative in inputs]
        if not all(video.exists() for video in videos):
            continue
        commands[name] = [
            sys.executable, "-m", "selfsup", "video", "patches", *map(str, videos), "--out",
            str(folder / name), "--max-frames", "200", *settings, *(f"masks.{m}" for m in masks),
            *tracker, "--quiet",
        ]  # fmt: skip
        if not (folder / name / "patches.npz").is_file():
            run(commands[name])
    return commands


def patch_graph(
    root: Path, folder: Path, embedder: Callable[[], Path], masks: tuple[str, ...] = ()
) -> dict:
    """The transitive rows' patches.npz and graph.npz in `folder`: the video patches under
    `root` (carried, else mined with mask settings `masks`) beside the CIFAR-10 training
    images, each its own track (the videos give intra edges, the images inter ones), built
    into one graph by the run `embedder()` returns, or the kept graph carried beside them.
    The patch counts, and the commands run and the graph's seconds."""
    carried = root / graph_set(masks)
    videos, commands = sorted(carried.glob("*/patches.npz")), {}
    if not videos:
        mined = video_patches(root, folder, masks)
        commands = {f"patches_{name}": command for name, command in mined.items()}
        videos = [folder / name / "patches.npz" for name in mined]
    folder.mkdir(parents=True, exist_ok=True)
    patches, graph = folder / "patches.npz", folder / "graph.npz"
    counts = merge_patches(videos, root / SOURCES["cifar10"]["train"], patches, size=32)
    if (carried / "graph.npz").is_file():
        shutil.copyfile(carried / "graph.npz", graph)
        return {"patches": counts}
    commands["graph"] = [
        sys.executable, "-m", "selfsup", "graph", "build", "--patches", str(patches),
        "--embed", str(embedder()), "--out", str(graph), "--quiet",
    ]  # fmt: skip
    seconds = run(commands["graph"]).seconds
    return {
        "patches": counts,
        "graph_seconds": round(seconds, 1),
        "commands": {key: portable(command) for key, command in commands.items()},
    }


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
