"""A generated corpus of bad inputs run through every command that reads user files.

Each case gives one command one bad input (everything else valid) and checks the project's
rule for bad input (docs/reliability.md): exit code 2, a last stderr line
`selfsup: error: <culprit>: <problem>` that names the file and what is wrong, no traceback,
and nothing written half: the command's --out (or --json) target does not exist afterwards.
One case per command runs it on valid inputs under paths with spaces and non-ASCII letters,
and that must work.

The inputs are generated here, once per module, in a folder whose name has spaces and
non-ASCII letters; every case folder's name has them too. The cases are counted per command
in the "Bad-input corpus" table of docs/reliability.md, which
`test_the_reliability_page_counts_the_cases` keeps true.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from tests.conftest import ROOT, make_images
from tests.helpers import (
    HAVE_PYCOCOTOOLS,
    NO_PYCOCOTOOLS,
    TRACKER,
    one_torch_thread,  # noqa: F401 (autouse: tiny tensors, one thread)
)
from tests.test_bad_input import FAST, encoded
from tests.test_dense import synthetic_frame, write_seven_scenes_npz, write_yolo
from tests.test_graph import COMMON, tiny_patches

cv2 = pytest.importorskip("cv2")

WEIRD = "dir with spaces ü 数据"  # every path the commands see has spaces and non-ASCII
TRANSITIVE = [*COMMON, "train.steps=1", "data.image_size=16", "transitive.crop_size=16",
              "transitive.pairs_per_batch=8"]  # fmt: skip
MOTION = [*COMMON, "backbone.name=alexnet_small", "data.batch_size=2", "data.image_size=32"]
MULTITASK = [*COMMON, "backbone.name=resnet18", "backbone.width=0.125", "backbone.stem=small",
             "backbone.num_stages=2", "data.batch_size=2",
             "multitask.tasks=[rotation,motion-segmentation]"]  # fmt: skip
GRAPH = ["clusters=2", "neighbours=5", "backend=torch"]
VIDEO = ["--size", "96", "--quiet", "flow_size=96", "min_residual=1", "morph_kernel=3"]
PATCHES = ["--size", "96", "--quiet", "seed_every=4", "patch_every=2", "patch_size=32",
           "masks.flow_size=96", "masks.min_residual=1", "masks.morph_kernel=3",
           "masks.min_area=0.005", f"track.tracker={TRACKER}"]  # fmt: skip


# --- the valid inputs, made once --------------------------------------------------------------


@dataclass
class Work:
    """Valid inputs of every command; a case replaces one of them with a bad one."""

    root: Path
    labelled: Path  # 16 labelled 32 px images in 4 classes (.npz)
    run: Path  # a 1-step counting run trained on them
    export: Path  # its backbone exported as safetensors
    patches: Path  # a patch dataset (48 patches in 12 tracks)
    other_patches: Path  # another one (40 patches)
    graph: Path  # the graph built on `patches` with `run`
    clip: Path  # a frame folder: 6 frames of a moving square on a panning background
    truth: Path  # its ground-truth masks
    masks: Path  # what `video masks` wrote for it
    rgbd: Path  # 10 RGB-D frames (the packed 7-Scenes form)
    detection: Path  # a YOLO folder of 5 images with 2 boxes each
    config: Path  # a valid --config file

    def inputs(self) -> dict[str, str]:
        return {key: str(value) for key, value in vars(self).items() if key != "root"}


def quiet_main(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Work:
    from tests.test_video import synthetic_clip, write_frames

    root = tmp_path_factory.mktemp("corpus") / WEIRD
    root.mkdir()
    images, labels = make_images(16, size=32)
    np.savez(root / "labelled.npz", images=images, labels=labels,
             class_names=np.array(["a", "b", "c", "d"]))  # fmt: skip
    quiet_main(["train", "counting", "--data", root / "labelled.npz", "--out", root / "run",
                "--quiet", *FAST])  # fmt: skip
    quiet_main(["export", root / "run", "--format", "safetensors", "--out", root / "export"])
    tiny_patches(root / "patches.npz")
    tiny_patches(root / "other_patches.npz", tracks=10, seed=1)
    quiet_main(["graph", "build", "--patches", root / "patches.npz", "--embed", root / "run",
                "--out", root / "graph.npz", "--quiet", *GRAPH])  # fmt: skip
    clip, truth = synthetic_clip(frames=6)
    write_frames(root / "clip", clip)
    (root / "truth").mkdir()
    for t, mask in enumerate(truth):
        cv2.imwrite(str(root / "truth" / f"{t:05d}.png"), mask.astype(np.uint8) * 255)
    quiet_main(["video", "masks", root / "clip", "--out", root / "masks", *VIDEO])
    write_seven_scenes_npz(root / "scene.npz", [synthetic_frame(i) for i in range(10)])
    image = np.full((48, 64, 3), 40, np.uint8)
    image[6:30, 4:20] = 220
    image[10:40, 30:60] = (30, 200, 30)
    write_yolo(root / "yolo", image, count=5)
    (root / "config.yaml").write_text("train:\n  log_every: 1\n")
    return Work(
        root,
        labelled=root / "labelled.npz",
        run=root / "run",
        export=root / "export.safetensors",
        patches=root / "patches.npz",
        other_patches=root / "other_patches.npz",
        graph=root / "graph.npz",
        clip=root / "clip",
        truth=root / "truth",
        masks=root / "masks",
        rgbd=root / "scene.npz",
        detection=root / "yolo",
        config=root / "config.yaml",
    )


# --- every command, with its inputs as slots --------------------------------------------------

# command -> argv from the inputs (slot -> path) and the case's folder, and the path the command
# writes (None: it writes nothing but stdout).
Invoke = Callable[[dict[str, str], Path], tuple[list[str], Path | None]]
EVAL = ["--no-cache", "--quiet"]


def train_counting(i: dict, d: Path):
    argv = ["train", "counting", "--data", i["data"], "--out", d / "run", "--quiet",
            "--config", i["config"], *FAST]  # fmt: skip
    return argv, d / "run"


def train_transitive(i: dict, d: Path):
    data = ["--data", i["patches"]] if i["patches"] else []  # else: the graph's patches
    argv = ["train", "transitive", "--graph", i["graph"], *data, "--out", d / "run", "--quiet",
            *TRANSITIVE]  # fmt: skip
    return argv, d / "run"


def train_motion(i: dict, d: Path):
    argv = ["train", "motion-segmentation", "--data", i["masks"], "--out", d / "run", "--quiet",
            *MOTION, "train.steps=1"]  # fmt: skip
    return argv, d / "run"


def train_multitask(i: dict, d: Path):
    argv = ["train", "multitask", "--data", i["labelled"], "--videos", i["masks"], "--out",
            d / "run", "--quiet", *MULTITASK, "train.steps=1"]  # fmt: skip
    return argv, d / "run"


def eval_linear(i: dict, d: Path):
    argv = ["eval", "linear", i["run"], "--data", i["data"], "--test", i["test"], *EVAL,
            "--steps", "5", "--weight-decay", "0.1", "--json", d / "result.json"]  # fmt: skip
    return argv, d / "result.json"


def eval_knn(i: dict, d: Path):
    argv = ["eval", "knn", i["run"], "--data", i["data"], "--test", i["test"], *EVAL, "--k", "3",
            "--json", d / "result.json"]  # fmt: skip
    return argv, d / "result.json"


def eval_finetune(i: dict, d: Path):
    argv = ["eval", "finetune", i["run"], "--data", i["data"], "--test", i["test"], *EVAL,
            "--steps", "1", "--batch-size", "4", "--out", d / "finetuned", "--json",
            d / "result.json"]  # fmt: skip
    return argv, d / "result.json"


def eval_depth(i: dict, d: Path):
    argv = ["eval", "depth", i["run"], "--data", i["rgbd"], "--steps", "1", "--size", "16",
            "--batch-size", "2", "--quiet", "--device", "cpu", "--json",
            d / "depth.json"]  # fmt: skip
    return argv, d / "depth.json"


def eval_detect(i: dict, d: Path):
    argv = ["eval", "detect", i["run"], "--data", i["detection"], "--steps", "1", "--size", "64",
            "--seeds", "0", "--batch-size", "2", "--quiet", "--device", "cpu", "--json",
            d / "detect.json"]  # fmt: skip
    return argv, d / "detect.json"


def report(i: dict, d: Path):
    argv = ["report", i["run"], "--data", i["data"], "--test", i["test"], *EVAL, "--protocol",
            "knn", "--k", "3", "--no-baselines", "--out", d / "report"]  # fmt: skip
    return argv, d / "report"


def inspect(i: dict, d: Path):
    data = ["--data", i["data"]] if i["data"] else []  # else: the run's (or graph's) data
    argv = ["inspect", i["run"], *data, "--out", d / "page", "--workers", "0",
            "--max-images", "16", "--device", "cpu", "--quiet"]  # fmt: skip
    return argv, d / "page"


def export(i: dict, d: Path):
    fmt = i.get("format", "safetensors")
    return ["export", i["run"], "--format", fmt, "--out", d / "exported" / "m"], d / "exported"


def embed(i: dict, d: Path):
    argv = ["embed", i["run"], i["data"], "--out", d / "features.npz", "--workers", "0",
            "--device", "cpu", "--quiet"]  # fmt: skip
    return argv, d / "features.npz"


def video_masks(i: dict, d: Path):
    truth = ["--eval", i["masks_truth"]] if "masks_truth" in i else []
    return ["video", "masks", i["video"], *truth, "--out", d / "masks", *VIDEO], d / "masks"


def video_patches(i: dict, d: Path):
    return ["video", "patches", i["video"], "--out", d / "patches", *PATCHES], d / "patches"


def video_track(i: dict, d: Path):
    argv = ["video", "track", i["video"], "--eval", i["truth"], "--out", d / "tracks",
            *PATCHES]  # fmt: skip
    return argv, d / "tracks"


def graph_build(i: dict, d: Path):
    argv = ["graph", "build", "--patches", i["patches"], "--embed", i["run"], "--out",
            d / "graph.npz", "--quiet", *GRAPH]  # fmt: skip
    return argv, d / "graph.npz"


def graph_stats(i: dict, d: Path):
    return ["graph", "stats", i["graph"], "--patches", i["patches"]], None


def graph_show(i: dict, d: Path):
    argv = ["graph", "show", i["graph"], "--patches", i["patches"], "--out", d / "show"]
    return argv, d / "show"


COMMANDS: dict[str, Invoke] = {
    "train counting": train_counting,
    "train transitive": train_transitive,
    "train motion-segmentation": train_motion,
    "train multitask": train_multitask,
    "eval linear": eval_linear,
    "eval knn": eval_knn,
    "eval finetune": eval_finetune,
    "eval depth": eval_depth,
    "eval detect": eval_detect,
    "report": report,
    "inspect": inspect,
    "export": export,
    "embed": embed,
    "video masks": video_masks,
    "video patches": video_patches,
    "video track": video_track,
    "graph build": graph_build,
    "graph stats": graph_stats,
    "graph show": graph_show,
}

# Defaults of the slots a case may replace, from the workspace's inputs.
SLOTS = {"data": "labelled", "test": "labelled", "video": "clip"}


# --- bad inputs --------------------------------------------------------------------------------

# A maker writes a bad input into the case folder `d` and returns its path, or (path given to
# the command, the culprit the message must name) when those differ.
Made = Path | tuple[Path, Path | str]
Maker = Callable[[Work, Path], Made]


def half_of(source: Path, d: Path, name: str | None = None) -> Path:
    data = source.read_bytes()
    path = d / (name or f"truncated{source.suffix}")
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_byte(name: str) -> Maker:
    def make(w: Work, d: Path) -> Path:
        (d / name).write_bytes(b"")
        return d / name

    return make


def text_file(name: str) -> Maker:
    def make(w: Work, d: Path) -> Path:
        (d / name).write_text("notes, not data\n")
        return d / name

    return make


def empty_folder(w: Work, d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


def unreadable_copy(pick: Callable[[Work], Path], name: str | None = None) -> Maker:
    """A copy of a valid input without read permission (root reads it anyway: skipped)."""

    def make(w: Work, d: Path) -> Path:
        source = pick(w)
        path = d / (name or source.name)
        shutil.copy(source, path)
        path.chmod(0)
        return path

    return make


def npz(name: str, **arrays) -> Maker:
    def make(w: Work, d: Path) -> Path:
        np.savez(d / name, **{k: v(w) if callable(v) else v for k, v in arrays.items()})
        return d / name

    return make


def last_checkpoint(w: Work) -> Path:
    return w.run / "checkpoints" / "last.pt"


def truncated_checkpoint(w: Work, d: Path) -> Path:
    return half_of(last_checkpoint(w), d, "last.pt")


def other_architecture(w: Work, d: Path) -> Path:
    """A checkpoint whose stored config names another backbone than its weights."""
    state = torch.load(last_checkpoint(w), weights_only=True)
    state["config"]["backbone"]["width"] = 0.25
    torch.save(state, d / "edited.pt")
    return d / "edited.pt"


def another_program(w: Work, d: Path) -> Path:
    """A plain state dict, as other programs save one: weights, but no selfsup record."""
    state = torch.load(last_checkpoint(w), weights_only=True)
    torch.save(state["model"], d / "weights.pt")
    return d / "weights.pt"


def truncated_export(w: Work, d: Path) -> Path:
    return half_of(w.export, d, "backbone.safetensors")


def folder_without_run(w: Work, d: Path) -> Path:
    (d / "runs").mkdir()
    (d / "runs" / "config.yaml").write_text("task: counting\n")
    return d / "runs"


# (name, maker, problem) for the RUN of every command that reads a trained model.
BAD_RUNS = [
    ("truncated checkpoint", truncated_checkpoint, "unreadable or corrupted"),
    ("zero-byte checkpoint", zero_byte("last.pt"), "unreadable or corrupted"),
    ("unreadable checkpoint", unreadable_copy(last_checkpoint), "Permission denied"),
    ("checkpoint of another architecture", other_architecture, "does not fit this model"),
    ("checkpoint of another program", another_program, "not a selfsup checkpoint"),
    ("truncated safetensors export", truncated_export, "truncated or corrupted"),
    ("folder without a checkpoint", folder_without_run, "not a run folder"),
]


def image_folder_with(bad: Callable[[Path], None]) -> Maker:
    """A folder of 4 valid images in 2 classes plus one file `bad` writes: (folder, file)."""

    def make(w: Work, d: Path) -> tuple[Path, Path]:
        folder = d / "images"
        for i, image in enumerate(make_images(4, size=24)[0]):
            (folder / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
            (folder / "ab"[i % 2] / f"{i}.png").write_bytes(encoded(image, "PNG"))
        file = folder / "a" / "bad ü.png"
        bad(file)
        return folder, file

    return make


def write_unreadable_image(path: Path) -> None:
    path.write_bytes(encoded(make_images(1, size=24)[0][0], "PNG"))
    path.chmod(0)


IMAGES, LABELS = make_images(8, size=32)

# (name, maker, problem) for the image data (`--data`, `--test`, IMAGES) of every command.
BAD_IMAGE_DATA = {
    "unreadable image": (image_folder_with(write_unreadable_image), "Permission denied"),
    "unreadable npz": (unreadable_copy(lambda w: w.labelled, "data.npz"), "Permission denied"),
    "zero-byte npz": (zero_byte("data.npz"), "cannot be read as an .npz"),
    "truncated npz": (lambda w, d: half_of(w.labelled, d), "cannot be read as an .npz"),
    "empty folder": (empty_folder, "no images found"),
    "npz images of wrong shape": (
        npz("data.npz", images=np.zeros((8, 32, 32, 2), np.uint8), labels=LABELS),
        "`images` must be (N, H, W, 3)",
    ),
    "npz images of wrong dtype": (
        npz("data.npz", images=IMAGES.astype(np.float32), labels=LABELS),
        "`images` must be uint8",
    ),
    "npz labels of another length": (
        npz("data.npz", images=IMAGES, labels=LABELS[:5]),
        "`labels` has shape (5,) but there are 8 images",
    ),
    "npz packed JPEG with offsets past the end": (
        npz("data.npz", jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 5, 20])),
        "`offsets` must rise from 0 to len(jpeg)=10",
    ),
    "npz images as Python objects": (
        npz(
            "data.npz",
            images=np.array([IMAGES[0], IMAGES[1][:16]], dtype=object),
            labels=LABELS[:2],
        ),
        "`images` is an array of Python objects",
    ),
    "npz images without pixels": (
        npz("data.npz", images=np.zeros((8, 0, 32, 3), np.uint8), labels=LABELS),
        "have no pixels",
    ),
}
LABELLED_ONLY = {"npz labels of another length"}


def unlabelled_folder(w: Work, d: Path) -> Path:
    folder = d / "flat"
    folder.mkdir()
    for i, image in enumerate(make_images(4, size=24)[0]):
        (folder / f"{i}.png").write_bytes(encoded(image, "PNG"))
    return folder


def nested_too_deep(w: Work, d: Path) -> Path:
    """root/train/<class>/x.png: the class folders one level too deep, so one class."""
    folder = d / "tree"
    for i, image in enumerate(make_images(4, size=24)[0]):
        (folder / "train" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (folder / "train" / "ab"[i % 2] / f"{i}.png").write_bytes(encoded(image, "PNG"))
    return folder


def fewer_classes(w: Work, d: Path) -> Path:
    images, labels = make_images(8, size=32, classes=3)
    np.savez(d / "three.npz", images=images, labels=labels)
    return d / "three.npz"


NAMES = np.array(["a", "b", "c", "d"])  # the class names of the workspace's labelled data

# Only evaluations read labels: (name, slot, maker, problem).
BAD_LABELLED = [
    ("unlabelled folder", "data", unlabelled_folder, "evaluation needs labels"),
    ("class folders one level too deep", "data", nested_too_deep, "one class"),
    ("test set of other classes", "test", fewer_classes, "classes but"),
    (
        "class_names fewer than the labels",
        "data",
        npz("data.npz", images=IMAGES, labels=LABELS, class_names=NAMES[:2]),
        "label 3 but `class_names` names 2 classes",
    ),
    (
        "labels in the billions",
        "data",
        npz("data.npz", images=IMAGES, labels=LABELS * 10**10),
        "more than 1,048,576 classes",
    ),
    (
        "test classes named otherwise",
        "test",
        npz("test.npz", images=IMAGES, labels=LABELS, class_names=np.array(["a", "b", "c", "x"])),
        "only in the test set ['x'], only in the training set ['d']",
    ),
    (
        "a test class without training images",
        "data",
        npz("data.npz", images=IMAGES, labels=LABELS % 3, class_names=NAMES),
        "no training image of class(es) ['d']",
    ),
    (
        "one class present among named classes",
        "data",
        npz("data.npz", images=IMAGES, labels=LABELS * 0, class_names=NAMES),
        "all images are in one class (a)",
    ),
]


# --- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    command: str
    name: str
    slot: str | None = None  # the input replaced; None: a case of valid inputs
    make: Maker | None = None
    problem: str = ""  # what the message must say besides the culprit
    extra: tuple[tuple[str, str], ...] = ()  # other inputs set by the case

    @property
    def id(self) -> str:
        return f"{self.command}: {self.name}"

    @property
    def needs_non_root(self) -> bool:
        return "unreadable" in self.name


CASES: list[Case] = []


def add(command: str, name: str, slot: str | None = None, make=None, problem="", **extra):
    CASES.append(Case(command, name, slot, make, problem, tuple(extra.items())))


VALID = "valid inputs at paths with spaces and unicode"
for _command in COMMANDS:
    add(_command, VALID)

# Trained models.
for _command, _slot in [("eval linear", "run"), ("eval knn", "run"), ("eval finetune", "run"),
                        ("eval depth", "run"), ("eval detect", "run"), ("report", "run"),
                        ("inspect", "run"), ("export", "run"), ("embed", "run"),
                        ("graph build", "run")]:  # fmt: skip
    for _name, _make, _problem in BAD_RUNS:
        if _command == "inspect" and _name == "truncated safetensors export":
            _problem = "has no training record"  # inspect refuses any export, whole or not
        add(_command, _name, _slot, _make, _problem)

# Image data (train counting: what tests/test_bad_input.py does not already cover).
for _name in ("unreadable image", "unreadable npz", "zero-byte npz", "truncated npz",
              "npz packed JPEG with offsets past the end"):  # fmt: skip
    add("train counting", _name, "data", *BAD_IMAGE_DATA[_name])
for _command, _slots in [("eval linear", ("data",)), ("eval knn", ("data", "test")),
                         ("eval finetune", ("data",)), ("report", ("data",)),
                         ("inspect", ("data",)), ("embed", ("data",))]:  # fmt: skip
    for _slot in _slots:
        for _name, (_make, _problem) in BAD_IMAGE_DATA.items():
            if _command in ("inspect", "embed") and _name in LABELLED_ONLY:
                continue
            if _command in ("inspect", "embed") and _name == "unreadable image":
                continue  # they skip and list bad images (tests/test_bad_input.py)
            label = _name if _slots == ("data",) else f"--{_slot}: {_name}"
            add(_command, label, _slot, _make, _problem)
for _command in ("eval linear", "eval knn", "eval finetune", "report"):
    for _name, _slot, _make, _problem in BAD_LABELLED:
        add(_command, _name, _slot, _make, _problem)


def all_images_bad(w: Work, d: Path) -> tuple[Path, Path]:
    folder = d / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"")
    return folder, folder


add("embed", "text file as IMAGES", "data", text_file("notes.txt"), "not a folder, an .npz")
add("embed", "every image bad", "data", all_images_bad, "none of the 2 images")
add("embed", "missing image file", "data", lambda w, d: d / "gone.png", "does not exist")
add("export", "torchvision format of a ResNet", None, None, "alexnet_torchvision",
    format="torchvision")  # fmt: skip


def run_of_another_task(w: Work, d: Path) -> tuple[Path, Path]:
    """A copy of the run whose checkpoint says it trained another task, given again as --out."""
    shutil.copytree(w.run, d / "run")
    path = d / "run" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["task"] = "rotation"
    torch.save(state, path)
    return d / "run", path


add("train counting", "run folder of another task", "out", run_of_another_task,
    "was trained with task=rotation")  # fmt: skip
add("train counting", "unreadable config file", "config", unreadable_copy(lambda w: w.config),
    "Permission denied")  # fmt: skip


def config_text(data: bytes) -> Maker:
    def make(w: Work, d: Path) -> Path:
        (d / "config.yaml").write_bytes(data)
        return d / "config.yaml"

    return make


add(
    "train counting",
    "a Latin-1 config file",
    "config",
    config_text("# Réglages\ntrain:\n  log_every: 1\n".encode("latin-1")),
    "is not UTF-8 text",
)
add(
    "train counting",
    "a config file with a key twice",
    "config",
    config_text(b"optim:\n  lr: 0.1\noptim:\n  lr: 0.2\n"),
    "key 'optim' appears twice",
)


# Patch datasets and graphs.
def graph_with(**changes) -> Maker:
    """The workspace graph with some arrays replaced (callables get the case folder)."""

    def make(w: Work, d: Path) -> Path:
        with np.load(w.graph) as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update({k: v(d) if callable(v) else v for k, v in changes.items()})
        np.savez(d / "graph.npz", **arrays)
        return d / "graph.npz"

    return make


def patches_with(**changes) -> Maker:
    def make(w: Work, d: Path) -> Path:
        with np.load(w.patches) as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update(changes)
        np.savez(d / "patches.npz", **arrays)
        return d / "patches.npz"

    return make


BAD_PATCHES = [
    ("zero-byte patches", zero_byte("patches.npz"), "cannot be read as an .npz"),
    ("truncated patches", lambda w, d: half_of(w.patches, d), "cannot be read as an .npz"),
    ("unreadable patches", unreadable_copy(lambda w: w.patches), "Permission denied"),
    ("graph file as patches", lambda w, d: w.graph, "no `images` array"),
    ("folder without patches", empty_folder, "no patch dataset there"),
    (
        "patches of wrong dtype",
        patches_with(images=np.zeros((48, 16, 16, 3), np.float32)),
        "must be (N, H, W, 3) uint8",
    ),
    (
        "patches of wrong shape",
        patches_with(images=np.zeros((48, 16, 16), np.uint8)),
        "must be (N, H, W, 3) uint8",
    ),
    ("track of another length", patches_with(track=np.arange(40)), "`track` has 40 entries"),
]
for _name, _make, _problem in BAD_PATCHES:
    add("graph build", _name, "patches", _make, _problem)

BAD_GRAPHS = [
    ("zero-byte graph", zero_byte("graph.npz"), "cannot be read as an .npz"),
    ("truncated graph", lambda w, d: half_of(w.graph, d), "cannot be read as an .npz"),
    ("unreadable graph", unreadable_copy(lambda w: w.graph), "Permission denied"),
    ("patches file as graph", lambda w, d: w.patches, "not a graph file"),
    ("folder without a graph", empty_folder, "no graph there"),
]
for _command in ("graph stats", "graph show", "train transitive"):
    for _name, _make, _problem in BAD_GRAPHS:
        add(_command, _name, "graph", _make, _problem)
    add(
        _command,
        "graph of another patch set",
        "patches",
        lambda w, d: w.other_patches,
        "built for other patches",
    )
add("train transitive", "graph whose patches are gone", "graph",
    lambda w, d: (graph_with(patches_path=str(d / "moved.npz"))(w, d), d / "moved.npz"),
    "are no longer there", patches="")  # fmt: skip
add("inspect", "graph whose patches are gone", "run",
    lambda w, d: (graph_with(patches_path=str(d / "moved.npz"))(w, d), d / "moved.npz"),
    "no patch dataset there", data="")  # fmt: skip


# Motion-segmentation data.
def masks_npz(images=None, masks=None) -> Maker:
    def make(w: Work, d: Path) -> Path:
        with np.load(w.masks / "motion_masks.npz") as data:
            arrays = {"images": data["images"], "masks": data["masks"]}
        if images is not None:
            arrays["images"] = images(arrays["images"])
        if masks is not None:
            arrays["masks"] = masks(arrays["masks"])
        np.savez(d / "motion_masks.npz", **arrays)
        return d / "motion_masks.npz"

    return make


BAD_MOTION = [
    ("images without masks", lambda w, d: w.labelled, "has no per-pixel masks"),
    ("masks of another shape", masks_npz(masks=lambda m: m[:, :-1]), "`masks`"),
    ("masks of wrong dtype", masks_npz(masks=lambda m: m.astype(np.float32)), "`masks`"),
    ("truncated masks file", lambda w, d: half_of(w.masks / "motion_masks.npz", d), ".npz"),
    ("zero-byte masks file", zero_byte("motion_masks.npz"), ".npz"),
    ("empty folder", empty_folder, "no"),
]
for _name, _make, _problem in BAD_MOTION:
    add("train motion-segmentation", _name, "masks", _make, _problem)
    if _name != "images without masks":
        add("train multitask", _name, "masks", _make, _problem)
add("train multitask", "zero-byte video", "masks", zero_byte("clip.mp4"), "cannot be opened")


# Videos.
def npz_clip(**arrays) -> Maker:
    return npz("clip.npz", **arrays)


def frames_of_two_sizes(w: Work, d: Path) -> Path:
    folder = d / "clip"
    shutil.copytree(w.clip, folder)
    Image.new("RGB", (50, 40)).save(folder / "00009.png")
    return folder


def unreadable_frame(w: Work, d: Path) -> tuple[Path, Path]:
    folder = d / "clip"
    shutil.copytree(w.clip, folder)
    (folder / "00003.png").chmod(0)
    return folder, folder / "00003.png"


def a_video_file(w: Work, d: Path) -> bytes:
    from tests.test_video import synthetic_clip, write_avi

    write_avi(d / "full.avi", synthetic_clip(frames=6)[0])
    return (d / "full.avi").read_bytes()


def truncated_avi(w: Work, d: Path) -> Path:
    data = a_video_file(w, d)
    (d / "cut.avi").write_bytes(data[: len(data) // 2])
    return d / "cut.avi"


def bad_after_good(w: Work, d: Path) -> tuple[Path, Path]:
    """A folder of two videos: the valid clip, then (in name order) a zero-byte one."""
    folder = d / "videos"
    shutil.copytree(w.clip, folder / "a clip")
    (folder / "b.mp4").write_bytes(b"")
    return folder, folder / "b.mp4"


def one_frame_clip(w: Work, d: Path) -> Path:
    folder = d / "clip"
    folder.mkdir()
    shutil.copy(sorted(w.clip.iterdir())[0], folder)
    return folder


def two_clips_of_one_name(w: Work, d: Path) -> tuple[Path, Path]:
    """A folder holding the frame folder `clip` and the packed clip `clip.npz`: both would
    write their outputs under `clip`."""
    folder = d / "videos"
    shutil.copytree(w.clip, folder / "clip")
    frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(w.clip.iterdir())])
    np.savez(folder / "clip.npz", images=frames)
    return folder, folder / "clip.npz"


CLIP = np.zeros((4, 96, 128, 3), np.uint8)
BAD_VIDEOS = [
    ("empty frame folder", empty_folder, "no video files"),
    ("zero-byte mp4", zero_byte("clip.mp4"), "cannot be opened as a video"),
    ("text file named .mp4", text_file("clip.mp4"), "cannot be opened as a video"),
    ("truncated avi", truncated_avi, "truncated or corrupt"),
    ("zero-byte npz clip", zero_byte("clip.npz"), "cannot be read as an .npz"),
    (
        "truncated npz clip",
        lambda w, d: half_of(w.masks / "motion_masks.npz", d, "clip.npz"),
        "cannot be read as an .npz",
    ),
    ("npz clip without frames", npz_clip(images=CLIP[:0]), "the video has no frames"),
    ("npz clip of wrong dtype", npz_clip(images=CLIP.astype(np.float32)), "(T, H, W, 3) uint8"),
    ("npz clip of wrong shape", npz_clip(images=CLIP[..., 0]), "(T, H, W, 3) uint8"),
    ("npz of another kind", lambda w, d: w.graph, "an .npz video needs"),
    ("frames of two sizes", frames_of_two_sizes, "frames differ in size"),
    ("unreadable frame", unreadable_frame, "Permission denied"),
    ("a bad video after a good one", bad_after_good, "cannot be opened as a video"),
    ("a clip of one frame", one_frame_clip, "1 frame; motion needs at least 2"),
    ("two clips of one name", two_clips_of_one_name, "two videos are named 'clip'"),
]
for _command in ("video masks", "video patches", "video track"):
    for _name, _make, _problem in BAD_VIDEOS:
        if _command == "video track" and _name == "a bad video after a good one":
            continue  # several videos need ground truth per video: the missing-masks case
        add(_command, _name, "video", _make, _problem)
for _name in ("a clip of one frame", "two clips of one name"):  # --videos computes masks
    _make, _problem = next((m, p) for n, m, p in BAD_VIDEOS if n == _name)
    add("train multitask", _name, "masks", _make, _problem)


def truth_without(count: int, culprit: Callable[[Work, Path], Path] | None = None) -> Maker:
    """The ground truth with only its first `count` masks."""

    def make(w: Work, d: Path) -> tuple[Path, Path]:
        folder = d / "truth"
        folder.mkdir()
        for file in sorted(w.truth.iterdir())[:count]:
            shutil.copy(file, folder)
        return folder, culprit(w, folder) if culprit else folder

    return make


for _command, _slot in (("video masks", "masks_truth"), ("video track", "truth")):
    add(_command, "missing masks", _slot, truth_without(0), "no ground-truth masks for video")
# `video masks` scores after computing the masks, and names the video it scores.
add("video masks", "masks for fewer frames", "masks_truth",
    truth_without(3, lambda w, folder: w.clip), "6 frames but 3 ground-truth masks")  # fmt: skip
add("video track", "masks for fewer frames", "truth", truth_without(3),
    "3 ground-truth masks for the 6 frames")  # fmt: skip


# RGB-D data (eval depth).
def rgbd_folder(rgb_size=(40, 32), depth_size=(40, 32), depth_mode="I;16", extra=None) -> Maker:
    def make(w: Work, d: Path) -> tuple[Path, Path]:
        folder = d / "rgbd"
        (folder / "rgb").mkdir(parents=True)
        (folder / "depth").mkdir()
        for i in range(4):
            rgb, depth = synthetic_frame(i)
            Image.fromarray(rgb).resize(rgb_size).save(folder / "rgb" / f"{i}.png")
            image = Image.fromarray(depth).resize(depth_size)
            (image.convert("RGB") if depth_mode == "RGB" else image).save(
                folder / "depth" / f"{i}.png"
            )
        culprit = folder / ("depth" if depth_mode == "RGB" else "rgb") / "0.png"
        if extra:
            culprit = extra(folder)
        return folder, culprit

    return make


def bad_intrinsics(folder: Path) -> Path:
    (folder / "intrinsics.txt").write_text("fx fy\n")
    return folder / "intrinsics.txt"


BAD_RGBD = [
    ("zero-byte npz", zero_byte("scene.npz"), "cannot be read as an .npz"),
    ("truncated npz", lambda w, d: half_of(w.rgbd, d), "cannot be read as an .npz"),
    ("unreadable npz", unreadable_copy(lambda w: w.rgbd), "Permission denied"),
    ("image npz instead of RGB-D", lambda w, d: w.labelled, "an RGB-D .npz needs keys"),
    ("folder without pairs", empty_folder, "no RGB + depth pairs"),
    ("depth of another size", rgbd_folder(depth_size=(20, 16)), "pairs must match"),
    ("three-channel depth", rgbd_folder(depth_mode="RGB"), "depth must be one channel"),
    ("malformed intrinsics", rgbd_folder(extra=bad_intrinsics), "3x3"),
]
for _name, _make, _problem in BAD_RGBD:
    add("eval depth", _name, "rgbd", _make, _problem)


# Detection data (eval detect).
def yolo_with(edit: Callable[[Path], Path]) -> Maker:
    def make(w: Work, d: Path) -> tuple[Path, Path]:
        folder = d / "yolo"
        shutil.copytree(w.detection, folder)
        return folder, edit(folder)

    return make


def label_not_numbers(folder: Path) -> Path:
    path = folder / "labels" / "train" / "000.txt"
    path.write_text("cat 0.5 0.5 0.2 0.2\n")
    return path


def class_beyond_names(folder: Path) -> Path:
    (folder / "labels" / "train" / "000.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    return folder


def truncated_image(folder: Path) -> Path:
    path = folder / "images" / "train" / "001.jpg"
    data = path.read_bytes()
    path.write_bytes(data[:20])
    return path


def coco_json(text: str | None = None, data: object = None) -> Maker:
    def make(w: Work, d: Path) -> Path:
        path = d / "instances.json"
        if text is not None:
            path.write_bytes(text.encode("latin-1"))
        else:
            path.write_text(json.dumps(data))
        return path

    return make


COCO_BASE = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}]}


def voc_with(xml: str) -> Maker:
    def make(w: Work, d: Path) -> tuple[Path, Path]:
        folder = d / "voc"
        (folder / "Annotations").mkdir(parents=True)
        (folder / "JPEGImages").mkdir()
        (folder / "Annotations" / "a.xml").write_text(xml)
        return folder, folder / "Annotations" / "a.xml"

    return make


BAD_DETECTION = [
    ("empty folder", empty_folder, "not a detection data set"),
    ("YOLO label that is not numbers", yolo_with(label_not_numbers), "not numbers"),
    ("YOLO class id beyond the names", yolo_with(class_beyond_names), "class id 7"),
    ("YOLO truncated image", yolo_with(truncated_image), "cannot be"),
    ("COCO json that is not JSON", coco_json(text='{"images": ['), "not valid JSON"),
    ("COCO json that is not UTF-8", coco_json(text='{"images": "caf\xe9"}'), "UTF-8"),
    ("COCO json of wrong shape", coco_json(data=[1, 2]), "a COCO json needs"),
    (
        "COCO annotation without a box",
        coco_json(data={**COCO_BASE, "annotations": [{"id": 3, "image_id": 1, "category_id": 1}]}),
        "annotation 3",
    ),
    ("COCO image missing", coco_json(data={**COCO_BASE, "annotations": []}), "image a.jpg"),
    ("VOC annotation that is not XML", voc_with("<annotation><object>"), "not valid XML"),
    (
        "VOC box without a coordinate",
        voc_with(
            "<annotation><filename>a.jpg</filename><object><name>x</name><bndbox>"
            "<xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object></annotation>"
        ),
        "ymax",
    ),
]
for _name, _make, _problem in BAD_DETECTION:
    add("eval detect", _name, "detection", _make, _problem)


# Saved results (report).
def results_file(text: str) -> Maker:
    def make(w: Work, d: Path) -> Path:
        (d / "results.json").write_text(text)
        return d / "results.json"

    return make


for _name, _text, _problem in [
    ("results file that is not JSON", '{"protocol": "knn", ', "not valid JSON"),
    ("results file of another kind", '{"task": "counting"}', "not results"),
    ("zero-byte results file", "", "not valid JSON"),
]:
    add("report", _name, "run", results_file(_text), _problem)

# --- the test ----------------------------------------------------------------------------------


def snapshot(path: Path | None) -> dict[str, bytes] | None:
    """Every file at or under `path` with its bytes; None when nothing is there."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@dataclass
class Outcome:
    code: int
    err: str
    out: Path | None  # what the command writes
    before: dict[str, bytes] | None  # what was there before it ran
    culprit: str


def run_case(case: Case, work: Work, tmp_path: Path, capsys) -> Outcome:
    d = tmp_path / f"case {case.name} é"
    d.mkdir()
    inputs = work.inputs()
    inputs.update({slot: inputs[key] for slot, key in SLOTS.items()})
    inputs.update(dict(case.extra))
    culprit = ""
    if case.make is not None:
        made = case.make(work, d)
        given, culprit = made if isinstance(made, tuple) else (made, made)
        inputs[case.slot] = str(given)
    argv, out = COMMANDS[case.command](inputs, d)
    before = snapshot(out)
    code = main([str(a) for a in argv])
    return Outcome(code, capsys.readouterr().err, out, before, str(culprit))


def reads_without_permission(folder: Path) -> bool:
    """Whether this process reads a file without read permission (root does)."""
    probe = folder / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return False
    finally:
        probe.chmod(0o600)
    return True


def unreadable_needs_non_root(case: Case, tmp_path: Path) -> None:
    if case.needs_non_root and reads_without_permission(tmp_path):
        pytest.skip(
            "this process reads files without read permission (root): run as another user, or "
            "as root without CAP_DAC_OVERRIDE (setpriv --bounding-set=-dac_override,"
            "-dac_read_search pytest ...)"
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit_and_writes_nothing(
    case, work, tmp_path, capsys, monkeypatch
):
    unreadable_needs_non_root(case, tmp_path)
    valid = case.make is None and not case.problem
    if case.command == "eval detect" and valid and not HAVE_PYCOCOTOOLS:  # gets to scoring mAP
        pytest.skip(NO_PYCOCOTOOLS)
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    result = run_case(case, work, tmp_path, capsys)
    err = result.err
    assert "Traceback" not in err, err
    if case.make is None and not case.problem:  # valid inputs: it works
        assert result.code == 0, err
        assert result.out is None or result.out.exists()
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert result.code == 2, err
    assert lines and lines[-1].startswith("selfsup: error: "), err
    assert sum("selfsup: error" in line for line in lines) == 1, err
    assert result.culprit in lines[-1], (result.culprit, lines[-1])
    assert case.problem in lines[-1], (case.problem, lines[-1])
    # Nothing written half: the output is not there, or (a run folder given again) unchanged.
    after = snapshot(result.out)
    if case.name == "a bad video after a good one" and case.command != "video track":
        # Mining keeps each video done whole, so that a rerun retries only the failed one.
        assert after and "1 of 2 videos failed" in lines[-1], lines[-1]
        assert {Path(k).parts[0] for k in after} == {"a clip" if "masks" in case.command
                                                     else "videos"}, sorted(after)  # fmt: skip
        return
    assert after == result.before, f"{result.out} changed: {sorted(after or {})}"


# --- the count in docs/reliability.md -----------------------------------------------------------


def documented_counts() -> dict[str, int]:
    """`| \\`command\\` | N | ... |` rows of the Bad-input corpus table."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## Bad-input corpus", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `selfsup ([^`]+)` \| (\d+) \|", section, re.MULTILINE)
    return {command: int(count) for command, count in rows}


def test_the_reliability_page_counts_the_cases():
    counted = Counter(case.command for case in CASES)
    assert documented_counts() == dict(counted)
    assert set(counted) == set(COMMANDS)
