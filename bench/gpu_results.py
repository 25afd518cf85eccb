"""Results at scale: every method pretrained on a GPU through one protocol, one table.

    python bench/gpu_results.py --list                 # the rows, measured or not
    python bench/gpu_results.py --prepare counting     # inputs of these rows -> bench/work
    python bench/gpu_results.py counting rotation      # run rows not yet measured
    python bench/gpu_results.py --table                # print the table (the docs show it too)
    python bench/gpu_results.py --quick counting random-alexnet_small   # tiny, on a CPU
    python bench/gpu_results.py --parallel 4 --deadline 540 rotation jigsaw colorization exemplar

A row is one `selfsup train` run of at most 9 minutes on one GPU followed by the same
evaluation for every method: weighted kNN (k = 200, T = 0.1) on the final layer with the
training images as the memory bank, and a linear probe on every layer, both scored on the
full test set (CIFAR-10: 50,000 / 10,000 images; Tiny ImageNet's 20 classes at 64 px: 10,000
/ 1,000). Training time (wall clock of the train command) and the peak GPU memory the loop
logs are columns, as in LightlySSL's benchmark table. Random-init rows evaluate an untrained
backbone of a method's architecture through the same code; supervised rows train with labels
for the same budget.

Budgets. The SimCLR-recipe exemplar row trains 200 epochs, the peer's benchmark; the recipe's
ablations (`simclr-100-*`: hue jitter, projection head, lr scaling, weight-decay exclusions,
each undone alone) train 100 epochs beside the whole recipe at 100. Every other row gets the
same GPU time, `--minutes` of training (default 6): a 40-step trial run
measures the step's rate and the schedule is sized to end when the time does.

Rows at once. One small model at 32 px may leave much of an H200 idle between its kernel
launches (not yet measured), so `--parallel K` runs K rows at a time, each in its own
processes with the CPU's threads shared out: K rows take about the wall-clock of one, and a
lent GPU's few minutes fill K rows instead of one. Each row then trains `--minutes` of
wall-clock beside the others, its trial run measuring the rate they leave it, so it gets a
share of the GPU: its epochs say how much, and the table marks it. Rows that a claim
compares (the single tasks and the four-task trunk, say) belong in one run, so they shared
the GPU alike; the SimCLR rows, sized in epochs, run alone. `--deadline S` starts no
budgeted row that could not end within S seconds of the start (its minutes plus
ROW_OVERHEAD_SECONDS), so a run fits the command's time limit. A row that fails is reported
and the others go on; the run then exits non-zero.

Transitive invariance. Its rows train on one patch graph, made as bench/run.py --suite
transitive makes it: `--prepare` mines tracked patches from the DAVIS clips and vtest with
`selfsup video patches` (OpenCV's trackers need opencv-contrib, so this runs where the data
is), carried as small .npz files; on the GPU machine the runner merges them with the CIFAR-10
training images (each its own track), embeds them with the relative-position row's run (or
trains one for the shared budget) and builds one graph per set of patches (the default
masks' for the three edge ablations, the residual masks' for transitive-residual-masks). A
run with the relative-position row can keep those graphs (`--keep-graph DIR` writes
`<set>-graph.npz`) for a later run on a bare machine (`--prepare --graph FILE` carries each),
which then trains no embedder of its own.

Results are appended, row by row, to bench/results/gpu_results.json (written atomically), and
rows already there are skipped, so the table fills over several runs of a few rows each. Each
run's inputs must travel to the GPU machine in 64 MiB: `--prepare ROWS` writes the data those
rows need into bench/work/gpu_results_inputs, the packed-JPEG files xz-compressed (the 623
bytes of JPEG header that every CIFAR-10 image repeats shrink the two CIFAR-10 files from 58
to about 18 MiB; they are unpacked there byte for byte), and refuses a set that would not fit.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # nothing installed

import numpy as np
from harness.data import carve_validation, merge_patches, subset_npz
from harness.record import RESULTS, ROOT, WORK, data_dir, portable

RESULTS_FILE = RESULTS / "gpu_results.json"
INPUTS = WORK / "gpu_results_inputs"
RUNS = WORK / "gpu_results"
CARRY_LIMIT_MIB = 64.0
# Seconds a budgeted row needs beyond its training minutes (process starts, trial run, masks,
# kNN and probes): rows are not started when less than that is left before --deadline.
ROW_OVERHEAD_SECONDS = 150
# Rows running at once take turns to make what they would otherwise make twice over: the
# carved Tiny ImageNet split, the transitive patch graph.
SPLITTING, GRAPHING = threading.Lock(), threading.Lock()
# Environment of every child process: selfsup importable from this checkout on a machine
# where nothing is installed (the GPU machine); main sets threads per row for --parallel.
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
    ),
}

MULTITASK = ["multitask", "--config", "multitask_small", "multitask.lasso=false"]
TRUNK = ["backbone.name=resnet18", "backbone.stem=small", "backbone.width=0.5"]
TRUNK += ["backbone.num_stages=3"]
# The SimCLR recipe on our exemplar task, as LightlySSL's CIFAR-10 benchmark sets SimCLR up:
# ResNet-18 (CIFAR stem), batch 512, InfoNCE at T = 0.5, crops of scale 0.08-1, colour jitter
# 0.4 with hue 0.1, no blur at 32 px (our views have none), a 512-wide projection MLP, SGD
# with lr 0.06 x batch / 128 and a cosine schedule, no weight decay on biases and norms,
# bf16 on the GPU.
SIMCLR = [
    "exemplar", "backbone.name=resnet18", "backbone.stem=small", "backbone.width=1.0",
    "backbone.num_stages=4", "data.batch_size=512", "exemplar.loss=infonce",
    "exemplar.temperature=0.5", "exemplar.crop_scale=[0.08,1.0]", "exemplar.hue_jitter=0.1",
    "optim.lr=0.06", "optim.lr_scaling=linear", "optim.lr_reference_batch=128",
    "optim.weight_decay=0.0005", "optim.warmup_steps=500", "optim.schedule=cosine",
]  # fmt: skip
# Each gap between our first exemplar run and the recipe, measured by undoing it alone at
# half the epochs (beside the whole recipe at those epochs).
RECIPE_GAPS = {
    "": "the SimCLR recipe",
    "-no-hue": ("without hue jitter", "exemplar.hue_jitter=0"),
    "-linear-head": ("a linear projection instead of the MLP", "exemplar.head_hidden=[]"),
    "-lr-sqrt": ("lr scaled by sqrt(batch / 128) instead of linearly", "optim.lr_scaling=sqrt"),
    "-decay-all": ("weight decay on biases and norms too", "optim.decay_norm_and_bias=true"),
}
TINY64 = ["data.image_size=64"]


@dataclass(frozen=True)
class Row:
    """One line of the table.

    `train`: what follows `selfsup train` (task and settings), without data or output;
    `random_of`: evaluate that row's architecture untrained instead; `epochs`: a fixed
    number of epochs instead of the shared GPU-time budget; `videos`: trains on motion masks
    too; `masks`: settings of those masks, or of the masks its graph's video patches were
    mined with (`selfsup video masks` key=value; default: the default method's); `graph`:
    trains on the transitive-invariance patch graph (`transitive_graph`).
    """

    label: str
    data: str  # "cifar10" or "tinyimagenet"
    train: tuple[str, ...] = ()
    random_of: str | None = None
    epochs: float | None = None
    videos: bool = False
    masks: tuple[str, ...] = ()
    graph: bool = False
    paper: str = field(default="", compare=False)


def single(task: str, data: str = "cifar10", *extra: str) -> Row:
    size = ", 64 px" if data == "tinyimagenet" else ""
    return Row(f"{task} (multi-task trunk{size})", data, (*MULTITASK, "--tasks", task, *extra))


ROWS: dict[str, Row] = {
    "exemplar-simclr": Row("exemplar, InfoNCE, SimCLR recipe, ResNet-18", "cifar10",
                           tuple(SIMCLR), epochs=200),
    **{f"simclr-100{suffix}": Row(f"SimCLR recipe, 100 epochs: {gap[0]}", "cifar10",
                                  (*SIMCLR, gap[1]), epochs=100)
       if suffix else Row("SimCLR recipe, 100 epochs", "cifar10", tuple(SIMCLR), epochs=100)
       for suffix, gap in RECIPE_GAPS.items()},
    "counting": Row("counting (AlexNet, small)", "cifar10",
                    ("counting", "--config", "counting_small")),
    **{task: single(task) for task in
       ("relative-position", "colorization", "exemplar", "rotation", "jigsaw")},
    "motion-segmentation": Row("motion segmentation (multi-task trunk)", "cifar10",
                               (*MULTITASK, "--tasks", "motion-segmentation"), videos=True),
    # The same on the earlier masks (moving parts rather than whole objects): what the
    # object masks of `selfsup video masks` change downstream.
    "motion-segmentation-residual-masks": Row(
        "motion segmentation on residual masks (multi-task trunk)", "cifar10",
        (*MULTITASK, "--tasks", "motion-segmentation"), videos=True,
        masks=("method=residual",)),
    "four-naive": Row("four tasks, naive", "cifar10", tuple(MULTITASK), videos=True),
    "four-lasso": Row("four tasks, lasso", "cifar10",
                      ("multitask", "--config", "multitask_small"), videos=True),
    "four-harmonized": Row("four tasks, lasso, harmonized", "cifar10",
                           ("multitask", "--config", "multitask_small",
                            "multitask.harmonize=true"), videos=True),
    **{f"transitive-{edges}": Row(f"transitive invariance, {edges} edges (multi-task trunk)",
                                  "cifar10", ("transitive", "--config", "transitive_small",
                                              f"transitive.edges={edges}"), graph=True)
       for edges in ("inter", "intra", "transitive")},
    # The same on patches mined with the earlier masks: what the object masks change here.
    "transitive-residual-masks": Row(
        "transitive invariance, transitive edges, patches from residual masks", "cifar10",
        ("transitive", "--config", "transitive_small", "transitive.edges=transitive"),
        graph=True, masks=("method=residual",)),
    "supervised-resnet18": Row("supervised, ResNet-18", "cifar10",
                               ("supervised", *SIMCLR[1:5], "data.batch_size=512",
                                "optim.lr=0.2")),
    "supervised-multitask-trunk": Row("supervised, multi-task trunk", "cifar10",
                                      ("supervised", *TRUNK, "optim.lr=0.05")),
    "random-resnet18": Row("random init, ResNet-18", "cifar10", random_of="exemplar-simclr"),
    "random-alexnet_small": Row("random init, AlexNet (small)", "cifar10", random_of="counting"),
    "random-multitask-trunk": Row("random init, multi-task trunk", "cifar10",
                                  random_of="rotation"),
    "ti64-counting": Row("counting, 64 px", "tinyimagenet",
                         ("counting", "--config", "counting_small", *TINY64,
                          "counting.crop_size=64")),
    "ti64-relative-position": single("relative-position", "tinyimagenet", *TINY64),
    "ti64-jigsaw": single("jigsaw", "tinyimagenet", *TINY64),
    "ti64-rotation": single("rotation", "tinyimagenet", *TINY64),
    "ti64-random-alexnet_small": Row("random init, AlexNet (small), 64 px", "tinyimagenet",
                                     random_of="ti64-counting"),
    "ti64-random-multitask-trunk": Row("random init, multi-task trunk, 64 px", "tinyimagenet",
                                       random_of="ti64-rotation"),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Data: what each data set reads, prepared to travel
# ---------------------------------------------------------------------------------------------

SOURCES = {
    "cifar10": {"train": "cifar10/train_jpeg.npz", "test": "cifar10/test_jpeg.npz"},
    # Tiny ImageNet's labelled test split is not staged: the last 50 training images of each
    # class are carved off as the test set (bench/run.py does the same).
    "tinyimagenet": {"train": "tinyimagenet/train_jpeg.npz"},
}
TINY_TEST_PER_CLASS = 50
VIDEOS = "video/davis2016/JPEGImages/480p"
# The transitive rows' video patches, as bench/run.py --suite transitive mines them: tracked
# object patches of the DAVIS clips and of vtest's first 200 frames (its walkers are small and
# slow: a lower residual floor finds them). Mined by --prepare on a machine with OpenCV's
# trackers (opencv-contrib), carried as patches.npz files, merged with the CIFAR-10 training
# images on the GPU machine.
VIDEO_PATCHES = {
    "davis": ([VIDEOS], []),
    "vtest": (["video/opencv_vtest/vtest.avi"], ["masks.min_residual=1"]),
}
PATCH_SIZE = 32


def graph_set(masks: tuple[str, ...]) -> str:
    """The name of the patch graph mined with mask settings `masks`: its folder in the
    inputs and on the GPU machine, and its file when kept (`<name>-graph.npz`)."""
    return "-".join(["transitive", *(setting.split("=", 1)[1] for setting in masks)])


def needed_files(names: list[str]) -> list[str]:
    """Paths (relative to the data folder) the rows `names` read."""
    files: list[str] = []
    for name in names:
        row = ROWS[name]
        files += [*SOURCES[row.data].values(), *([VIDEOS] if row.videos else [])]
    return sorted(set(files))


def prepare(names: list[str], graphs: list[Path]) -> None:
    """Write the inputs of rows `names` (xz-compressed packed JPEGs, video folders, the
    video patches of their graphs; `graphs`, graphs an earlier run kept) to INPUTS, refusing
    a set that would not travel with the repository in CARRY_LIMIT_MIB."""
    shutil.rmtree(INPUTS, ignore_errors=True)
    for masks in sorted({ROWS[name].masks for name in names if ROWS[name].graph}):
        mine_video_patches(data_dir(), INPUTS / graph_set(masks), masks)
    for graph in graphs:
        target = INPUTS / graph.name.removesuffix("-graph.npz") / "graph.npz"
        if not target.parent.is_dir():
            sys.exit(f"--graph {graph}: none of these rows trains on {target.parent.name}")
        shutil.copyfile(graph, target)
    for relative in needed_files(names):
        source, target = data_dir() / relative, INPUTS / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.with_name(target.name + ".xz").write_bytes(lzma.compress(source.read_bytes()))
    size = sum(p.stat().st_size for p in INPUTS.rglob("*") if p.is_file()) / 2**20
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    repo = sum((ROOT / p).stat().st_size for p in tracked.stdout.decode().split("\0") if p)
    total = size + repo / 2**20
    print(f"inputs of {len(names)} rows: {size:.1f} MiB (+ repository {repo / 2**20:.1f} MiB)")
    if total > CARRY_LIMIT_MIB:
        sys.exit(f"{total:.1f} MiB would not travel in {CARRY_LIMIT_MIB:.0f} MiB: fewer rows")


def available_tracker() -> list[str]:
    """The default tracker (CSRT) where OpenCV has its contrib modules, else MIL, said aloud:
    carried patches (--prepare, where OpenCV has them) spare the GPU machine this."""
    from selfsup.video.track import tracker_available

    if tracker_available("csrt"):
        return []
    print("  this OpenCV has no CSRT tracker (contrib): mining video patches with MIL")
    return ["track.tracker=mil"]


def mine_video_patches(root: Path, out: Path, masks: tuple[str, ...]) -> list[Path]:
    """`selfsup video patches` on each VIDEO_PATCHES set under `root` with mask settings
    `masks` (once; kept in `out`); the patches.npz files written."""
    files = []
    for name, (inputs, settings) in VIDEO_PATCHES.items():
        videos = [root / relative for relative in inputs]
        target = out / name
        if not all(video.exists() for video in videos):
            continue
        if not (target / "patches.npz").is_file():
            mask_settings = [f"masks.{setting}" for setting in masks]
            selfsup("video", "patches", *map(str, videos), "--out", str(target),
                    "--max-frames", "200", *settings, *mask_settings,
                    *available_tracker())  # fmt: skip
        files.append(target / "patches.npz")
    return files


def transitive_graph(
    root: Path, args: argparse.Namespace, masks: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """(patches, graph) of the transitive rows whose video patches come from masks made
    with `masks`, made once per machine: the video patches (carried, else mined from
    `root`'s videos) beside the CIFAR-10 training images, each its own track, embedded by a
    relative-position run (the relative-position row's, when it ran here, else one trained
    for the shared budget) and built into one graph; or the graph an earlier run kept
    (--keep-graph), carried in `root` (--prepare --graph): training checks that it was built
    for these very patches."""
    name = graph_set(masks)
    folder = RUNS / f"{name}_graph"
    patches, graph = folder / "patches.npz", folder / "graph.npz"
    if graph.is_file():
        return patches, graph
    folder.mkdir(parents=True, exist_ok=True)
    carried = sorted((root / name).glob("*/patches.npz"))
    video_files = carried or mine_video_patches(root, folder, masks)
    cifar = data_paths(ROWS["relative-position"], root)
    merge_patches(video_files, cifar["train"], patches, size=PATCH_SIZE)
    if (root / name / "graph.npz").is_file():
        shutil.copyfile(root / name / "graph.npz", graph)
        return patches, graph
    embedder = RUNS / "relative-position"
    if not (embedder / "checkpoints" / "last.pt").is_file():
        embedder = folder / "embedder"
        steps = planned_steps(ROWS["relative-position"], cifar, args, folder / "trial")
        selfsup(*train_argv(ROWS["relative-position"], cifar, embedder, steps, args.train_extra))
    selfsup("graph", "build", "--patches", str(patches), "--embed", str(embedder),
            "--out", str(graph))  # fmt: skip
    return patches, graph


def data_root(quick: bool) -> Path:
    """The data folder: carried inputs unpacked (xz -> npz, once) when present, else
    $SELFSUP_DATA. With --quick, subsets of the CIFAR-10 sample bundled with selfsup."""
    if quick:
        return quick_data()
    if not INPUTS.is_dir():
        return data_dir()
    for packed in INPUTS.rglob("*.npz.xz"):
        unpacked = packed.with_suffix("")
        if not unpacked.is_file():
            unpacked.write_bytes(lzma.decompress(packed.read_bytes()))
    return INPUTS


def quick_data() -> Path:
    """A data folder laid out like the real one from the bundled CIFAR-10 sample: 256
    training and 128 test images per data set, so every code path runs in seconds."""
    root = WORK / "gpu_results_quick_data"
    for seed in (0, 1):
        write_quick_clip(root / VIDEOS / f"synthetic{seed}", seed)
    assets = ROOT / "src" / "selfsup" / "assets"
    for relatives in SOURCES.values():
        for split, relative in relatives.items():
            count = 256 if split == "train" else 128
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_file():
                shutil.copyfile(subset_npz(assets / f"cifar10_sample_{split}.npz", count), target)
    return root


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


def data_paths(row: Row, root: Path) -> dict[str, Path]:
    """Pretraining, kNN memory bank and probe training set (the training split) and the test
    set; Tiny ImageNet's carved from its training images."""
    paths = {split: root / relative for split, relative in SOURCES[row.data].items()}
    if "test" not in paths:
        per_class = 2 if root.name == "gpu_results_quick_data" else TINY_TEST_PER_CLASS
        folder = root / f"{row.data}_split"
        paths["train"], paths["test"] = carve_validation(paths["train"], folder, per_class)
    if row.videos:
        paths["videos"] = root / VIDEOS
    return paths


# ---------------------------------------------------------------------------------------------
# Running a row
# ---------------------------------------------------------------------------------------------


def selfsup(*argv: str, quiet: bool = True) -> float:
    """Run `selfsup ARGV` as a user would; its wall-clock seconds."""
    command = [sys.executable, "-m", "selfsup", *argv, *(["--quiet"] if quiet else [])]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=CHILD_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"{portable(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def last_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])


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


def planned_steps(row: Row, paths: dict[str, Path], args: argparse.Namespace, trial: Path) -> int:
    """Steps of the row's schedule: --steps with --quick, its epochs, or what --minutes of
    training afford at the rate a short trial run (in folder `trial`) measures: with rows
    running at once, the rate they leave it."""
    if args.steps:
        return args.steps
    with np.load(paths["train"]) as archive:
        images = len(archive["labels"])
    if row.epochs:
        batch = next(int(a.split("=")[1]) for a in row.train if a.startswith("data.batch_size="))
        return int(row.epochs * (images // batch))
    shutil.rmtree(trial, ignore_errors=True)
    selfsup(*train_argv(row, paths, trial, 40, args.train_extra), "train.log_every=20")
    rate = last_metrics(trial)["images_per_sec"]  # the second window: warm-up excluded
    batch = batch_of(trial)
    shutil.rmtree(trial)
    return max(1, int(args.minutes * 60 * rate / batch))


def read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def evaluate(folder: Path, paths: dict[str, Path], random_init: bool, probe: list[str]) -> dict:
    """kNN on the final layer and linear probes on every layer, on the test set; `probe`:
    extra `eval linear` options."""
    common = ["--data", str(paths["train"]), "--test", str(paths["test"]), "--no-cache"]
    common += ["--random-init"] if random_init else []
    knn_seconds = selfsup("eval", "knn", str(folder), *common, "--json", str(folder / "knn"))
    linear_seconds = selfsup(
        "eval", "linear", str(folder), *common, *probe, "--json", str(folder / "linear")
    )
    knn, linear = (first_model(folder / f"{name}.json") for name in ("knn", "linear"))
    return {
        "knn_top1": round(100 * knn["layers"][-1]["top1"], 2),
        "knn_layer": knn["layers"][-1]["layer"],
        "linear_top1": {
            layer["layer"]: round(100 * layer["top1"], 2) for layer in linear["layers"]
        },
        "eval_seconds": round(knn_seconds + linear_seconds, 1),
        "num_train": knn["num_train"],
        "num_test": knn["num_test"],
    }


def first_model(path: Path) -> dict:
    """The results of the one model an `eval --json` file holds (a list when it holds more)."""
    data = json.loads(path.read_text())
    return data[0] if isinstance(data, list) else data


def run_row(name: str, root: Path, args: argparse.Namespace) -> dict:
    row = ROWS[name]
    trained = ROWS[row.random_of] if row.random_of else row
    with SPLITTING:  # made once, by the first row that needs it
        paths = data_paths(trained, root)
    if trained.graph:
        with GRAPHING:
            paths["patches"], paths["graph"] = transitive_graph(root, args, trained.masks)
    if trained.videos and trained.masks:  # masks made with these settings, read from there
        masks = RUNS / f"{name}_masks"
        shutil.rmtree(masks, ignore_errors=True)  # a rerun on this machine makes them afresh
        selfsup("video", "masks", str(paths["videos"]), "--out", str(masks), *trained.masks)
        paths["videos"] = masks
    folder = RUNS / name
    shutil.rmtree(folder, ignore_errors=True)
    # A random-init row builds its architecture with one step of its method's command.
    steps = 1 if row.random_of else planned_steps(row, paths, args, RUNS / f"{name}_trial")
    argv = train_argv(trained, paths, folder, steps, args.train_extra)
    train_seconds = selfsup(*argv)
    metrics = last_metrics(folder)
    result = {
        "label": row.label,
        "data": row.data,
        "train_command": None if row.random_of else portable(["selfsup", *argv]),
        "steps": 0 if row.random_of else steps,
        "train_seconds": None if row.random_of else round(train_seconds, 1),
        "peak_memory_gib": None if row.random_of else metrics.get("max_memory_gib"),
        **evaluate(folder, paths, random_init=bool(row.random_of), probe=args.probe),
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(),
        "concurrent": args.parallel,  # rows sharing the GPU while this one ran (at most)
    }
    with np.load(paths["train"]) as archive:
        result["epochs"] = round(result["steps"] * batch_of(folder) / len(archive["labels"]), 2)
    return result


def run_rows(names: list[str], root: Path, args: argparse.Namespace, results: dict) -> list[str]:
    """Run rows `names`, up to --parallel at once, each saved to the results file as it ends;
    a row that fails is reported and the others go on. The rows that failed."""
    started = time.monotonic()
    futures: dict[str, Future] = {}
    failed = []

    def start(name: str) -> dict | None:
        if ROWS[name].graph and "relative-position" in futures:
            futures["relative-position"].exception()  # its run embeds the graph's patches
        row, left = ROWS[name], time_left(started, args.deadline)
        budgeted = not (row.random_of or row.epochs or args.steps)  # sized by --minutes
        if budgeted and left < args.minutes * 60 + ROW_OVERHEAD_SECONDS:
            say(f"{name}: {left:.0f} s left before --deadline, not started")
            return None
        say(f"{name}: running")
        return run_row(name, root, args)

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for name in names:
            futures[name] = pool.submit(start, name)
        rows_of = {future: name for name, future in futures.items()}
        for future in as_completed(rows_of):  # saved here, one at a time, as they end
            name = rows_of[future]
            try:
                result = future.result()
            except Exception as error:  # one broken row must not cost the others their run
                failed.append(name)
                say(f"{name}: FAILED: {error}")
                continue
            if result is not None:
                results["rows"][name] = result
                save_results(results, args.results)
                say(f"{name}: kNN {result['knn_top1']:.1f} %")
    return failed


def keep_graphs(root: Path, args: argparse.Namespace) -> None:
    """Build the graph of every graph row's patch set (with this run's relative-position
    row, when it ran) and write each to --keep-graph DIR as `<set>-graph.npz`, for the
    transitive rows of a later run on a bare machine."""
    args.keep_graph.mkdir(parents=True, exist_ok=True)
    for masks in sorted({row.masks for row in ROWS.values() if row.graph}):
        target = args.keep_graph / f"{graph_set(masks)}-graph.npz"
        shutil.copyfile(transitive_graph(root, args, masks)[1], target)
        print(f"transitive graph kept in {target}")


def say(line: str) -> None:
    """One whole line at once: rows running in threads print without splicing lines."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def time_left(started: float, deadline: float | None) -> float:
    return deadline - (time.monotonic() - started) if deadline else float("inf")


def batch_of(folder: Path) -> int:
    return read_yaml(folder / "config.yaml")["data"]["batch_size"]


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# Results file, claims and table
# ---------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def save_results(results: dict, path: Path) -> None:
    """Atomically: a run killed while writing leaves the previous file."""
    from selfsup.outputs import written_atomically

    with written_atomically(path) as temporary:
        temporary.write_text(json.dumps(results, indent=2) + "\n")


def best_linear(row: dict) -> float:
    return max(row["linear_top1"].values())


def claims(rows: dict) -> list[tuple[str, str]]:
    """Each paper's own claim at this scale: (claim, confirmed / not confirmed / not yet
    measured, with the figures)."""
    out = []
    counting, random = rows.get("counting"), rows.get("random-alexnet_small")
    claim = "counting above random init on every layer (linear probes)"
    if counting and random:
        below = [
            layer for layer, top1 in counting["linear_top1"].items()
            if top1 <= random["linear_top1"].get(layer, 0)
        ]  # fmt: skip
        verdict = f"not confirmed: at or below on {', '.join(below)}" if below else "confirmed"
        out.append((claim, verdict))
    else:
        out.append((claim, "not yet measured"))
    singles = ["relative-position", "colorization", "exemplar", "motion-segmentation"]
    four = rows.get("four-lasso")
    claim = "the four-task trunk above every single task (best linear layer)"
    if four and all(name in rows for name in singles):
        best = max(singles, key=lambda name: best_linear(rows[name]))
        margin = best_linear(four) - best_linear(rows[best])
        verdict = "confirmed" if margin > 0 else "not confirmed"
        out.append((claim, f"{verdict}: {margin:+.2f} points against {best}"))
    else:
        out.append((claim, "not yet measured"))
    claim = "transitive above inter-only and intra-only (best linear layer)"
    names = ["transitive-transitive", "transitive-inter", "transitive-intra"]
    if all(name in rows for name in names):
        both = best_linear(rows[names[0]])
        ok = all(both > best_linear(rows[name]) for name in names[1:])
        out.append((claim, "confirmed" if ok else "not confirmed"))
    else:
        out.append((claim, "not yet measured"))
    return out


def table(results: dict) -> str:
    """The results page: every row, measured or not, then the claims."""
    lines = [
        "# Results at scale (GPU)",
        "",
        "Generated from `bench/results/gpu_results.json` (`python bench/gpu_results.py`).",
        "Every row: one `selfsup train` run, then kNN (k = 200, T = 0.1) on the final layer and",
        "linear probes on every layer, scored on the full test set. Protocol and budgets: the",
        'docstring of `bench/gpu_results.py`. "K at once": the row shared the GPU with up to',
        "K - 1 others (`--parallel K`), its training minutes are wall-clock beside them.",
        "",
        "| row | data | kNN top-1 | best linear (layer) | epochs | train min | peak GiB | GPU "
        "| date |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in ROWS.items():
        measured = results["rows"].get(name)
        if not measured:
            why = "not yet measured"
            lines.append(f"| {row.label} | {row.data} | {why} | | | | | | |")
            continue
        layer = max(measured["linear_top1"], key=measured["linear_top1"].get)
        minutes = measured["train_seconds"] and round(measured["train_seconds"] / 60, 1)
        shared = measured.get("concurrent", 1)
        minutes = f"{minutes} ({shared} at once)" if minutes and shared > 1 else minutes
        lines.append(
            f"| {row.label} | {row.data} | {measured['knn_top1']:.1f} | "
            f"{measured['linear_top1'][layer]:.1f} ({layer}) | {measured['epochs']} | "
            f"{minutes or '—'} | {measured['peak_memory_gib'] or '—'} | {measured['device']} | "
            f"{measured['date']} |"
        )
    lines += ["", "## The papers' claims at this scale", ""]
    lines += [f"- {claim}: **{verdict}**" for claim, verdict in claims(results["rows"])]
    lines += ["", "## Commands", ""]
    commands = [
        f"- {name}: `{measured['train_command']}`"
        for name, measured in results["rows"].items()
        if measured.get("train_command")
    ]
    lines += commands or ["None yet: no row has been measured."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="*", help="rows to run (default: every row not measured)")
    parser.add_argument("--list", action="store_true", help="print the rows and their state")
    parser.add_argument("--prepare", action="store_true", help="write the rows' inputs")
    parser.add_argument("--table", action="store_true", help="print the table, run nothing")
    parser.add_argument(
        "--minutes",
        type=float,
        default=6.0,
        help="training minutes a row (wall-clock, beside the others with --parallel)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 steps (CPU, CI)")
    parser.add_argument("--steps", type=int, help="fixed steps for every row (default: budget)")
    parser.add_argument("--results", type=Path, help="results JSON (default by mode)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="rows run at once, sharing the GPU (default 1)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="start no budgeted row that would end past this many seconds",
    )
    parser.add_argument(
        "--keep-graph",
        type=Path,
        metavar="DIR",
        help="after the rows, write the transitive rows' graphs (built with this run's "
        "relative-position row when it ran) to DIR",
    )
    parser.add_argument(
        "--graph",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help="with --prepare: carry this kept graph (a <set>-graph.npz that --keep-graph "
        "wrote) for the transitive rows; repeatable",
    )
    args = parser.parse_args(argv)
    for graph in args.graph:
        if not graph.is_file() or not graph.name.endswith("-graph.npz"):
            parser.error(f"--graph {graph}: not a <set>-graph.npz file that --keep-graph wrote")
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, got {args.parallel}")
    unknown = [name for name in args.rows if name not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; see --list")
    args.probe = []
    args.train_extra = ()
    if args.quick:
        args.steps = args.steps or 2
        # The quick data holds 256 images: fewer than the SimCLR rows' batch of 512.
        args.train_extra = ("data.batch_size=16",)
        # One L2 strength and a few L-BFGS iterations: the probe's code runs, not its search.
        args.probe = ["--weight-decay", "0.01", "--steps", "10"]
    default = WORK / "gpu_results_quick.json" if args.quick else RESULTS_FILE
    args.results = args.results or default
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.parallel > 1:  # the CPU's threads shared out, not oversubscribed K times
        threads = max(1, (os.cpu_count() or 1) // args.parallel)
        CHILD_ENV.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    results = load_results(args.results)
    if args.list:
        for name, row in ROWS.items():
            state = "measured" if name in results["rows"] else "to run"
            print(f"{name:28s} {row.data:13s} {state}")
        return
    names = args.rows or list(ROWS)
    if args.prepare:
        prepare(names, args.graph)
        return
    failed = []
    if not args.table:
        root = data_root(args.quick)
        for name in names:
            if name in results["rows"]:
                print(f"{name}: measured {results['rows'][name]['date']}, skipped")
        # In the table's order: the relative-position row starts before the transitive rows,
        # whose patch graph its run embeds.
        todo = [name for name in ROWS if name in names and name not in results["rows"]]
        failed = run_rows(todo, root, args, results)
        if args.keep_graph:
            try:
                keep_graphs(root, args)
            except Exception as error:  # the rows are saved: still show the table
                failed.append(f"--keep-graph ({error})")
    print(table(results))
    if failed:
        sys.exit(f"rows that failed: {', '.join(failed)} (their errors are above)")


if __name__ == "__main__":
    main()
