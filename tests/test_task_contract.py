"""The contract every registered task keeps, generated from the registry: tiny config ->
views from random uint8 images -> finite scalar loss and scalar metrics; a few optimiser steps
on one fixed batch lower the loss; `selfsup train NAME` runs 2 steps from the command line;
`selfsup config NAME` prints a config that reads back; and the defaults train, given only the
task's required inputs.

A new task is covered automatically (with its default config), whatever inputs it declares;
add its tiny settings to TINY to keep the test fast, and the inputs it requires besides
images to `required_inputs`.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from selfsup.cli import main
from selfsup.config import resolve
from selfsup.data.streams import synthetic_fields
from selfsup.tasks import list_tasks, task_config_class
from selfsup.train import build_model
from tests.conftest import make_images
from tests.helpers import TINY as TINY_COUNTING
from tests.test_graph import tiny_patches

# Small heads, sets and grids per task, so each trains in a fraction of a second per step on a
# CPU with 16 px images (the patch tasks' 3x3 grids shrink to 4 px patches with 2 px gaps).
TINY: dict[str, dict] = {
    "counting": {"num_counts": 16, "head_hidden": [16], "crop_size": 8},
    "supervised": {"num_classes": 4},
    "relative-position": {"patch_size": 4, "gap": 2, "jitter": 0, "head_hidden": [32]},
    "colorization": {"head_hidden": 16},
    "exemplar": {"head_hidden": [32], "embedding_dim": 16},
    "rotation": {},
    "jigsaw": {
        "tile_size": 4,
        "gap": 2,
        "jitter": 0,
        "num_permutations": 10,
        "tile_features": 16,
        "head_hidden": [32],
    },
    "motion-segmentation": {"head_hidden": 16},
    "transitive": {"crop_size": 16, "embedding_dim": 16, "negatives": 2},
}
TINY["multitask"] = {
    "tasks": ["rotation", "exemplar", "motion-segmentation"],
    "settings": {name: TINY[name] for name in ("exemplar", "motion-segmentation")},
}
IMAGE_SIZE, BATCH = 16, 4


def build(name: str):
    values = {"task": name, "backbone": {"name": "alexnet_small"}, name: TINY.get(name, {})}
    return build_model(resolve(values, task_config_class))


def batch_inputs(task, seed: int = 0, batch: int = BATCH) -> dict:
    """What the loop would give the task: the fields of the inputs it declares."""
    size = max(IMAGE_SIZE, task.min_image_size())
    return synthetic_fields(task.inputs(), batch, size, torch.Generator().manual_seed(seed))


def views_on(task, device: torch.device, seed: int = 0) -> dict:
    """The task's views built from inputs on `device`, as the loop builds them there (track
    ids, pair types and graph pairs stay on the host, as the pair stream gives them)."""
    on_host = ("tracks", "pair_types", "connected")
    fields = {k: v if k in on_host else v.to(device) for k, v in batch_inputs(task, seed).items()}
    return task.make_views(**fields, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list_tasks())
def test_finite_scalar_outputs_and_a_few_steps_lower_the_loss(name, device):
    torch.manual_seed(0)
    task = build(name).to(device)
    views = views_on(task, device)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    losses = []
    for step in range(5):
        out = task(views)
        if step == 0:
            assert out["loss"].ndim == 0 and out["loss"].requires_grad
            for key, value in out.items():
                assert value.ndim == 0 and torch.isfinite(value), key
        optimizer.zero_grad()
        out["loss"].backward()
        if step == 0:  # the trunk learns from the task
            assert any(p.grad.abs().sum() > 0 for p in task.backbone.parameters())
        optimizer.step()
        losses.append(out["loss"].item())
    assert task(views)["loss"].item() < losses[0], losses


class CountOperations(TorchDispatchMode):
    """Counts the tensor operations dispatched inside it (on a GPU, roughly its launches)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list_tasks())
def test_views_are_batched_operations_whatever_the_batch(name):
    """A task builds its views with a fixed number of tensor operations, whatever the batch
    size: no per-image Python loop, so on a GPU the launches do not grow with the batch.
    (Batches of 32 and 64 draw every random choice, e.g. each resize kernel, at least once.)"""
    task = build(name)
    counts = []
    for batch in (32, 64):
        fields = batch_inputs(task, batch=batch)
        with CountOperations() as counter:
            task.make_views(**fields, generator=torch.Generator().manual_seed(0))
        counts.append(counter.count)
    assert counts[0] == counts[1], f"{name}: {counts[0]} operations at batch 32, {counts[1]} at 64"


@pytest.fixture(scope="module")
def npz_with_everything(tmp_path_factory):
    """A tiny dataset with labels and motion masks, so any task can train on it."""
    images, labels = make_images(16, size=IMAGE_SIZE)
    masks = (images[..., 0] > 150).astype(np.uint8)  # the bright square "moves"
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=labels, masks=masks)
    return path


@pytest.mark.parametrize("name", list_tasks())
def test_train_from_the_command_line(name, npz_with_everything, tmp_path):
    if name == "transitive":
        pytest.skip("trains on a patch graph: test_default_settings_train and test_graph.py")
    settings = [f"{name}.{key}={json.dumps(value)}" for key, value in TINY.get(name, {}).items()]
    out = tmp_path / "run"
    argv = [
        "train", name, "--data", str(npz_with_everything), "--out", str(out), "--steps", "2",
        *(["--videos", str(npz_with_everything)] if name == "multitask" else []),
        "--quiet", "backbone.name=alexnet_small", f"data.image_size={IMAGE_SIZE}",
        f"data.batch_size={BATCH}", "data.workers=0",
        "train.log_every=1", "optim.warmup_steps=1", *settings,
    ]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert (out / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("name", list_tasks())
def test_config_prints_every_task_and_reads_back(name, capsys):
    assert main(["config", name]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    assert values["task"] == name and isinstance(values[name], dict)
    assert resolve(values, task_config_class) == resolve({"task": name}, task_config_class)


def test_transitive_without_a_graph_is_named_when_training(tiny_npz, tmp_path, capsys):
    argv = ["train", "transitive", "--data", str(tiny_npz), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfsup: error: transitive.graph: required") and "--graph" in err


# --- the defaults train ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_size_npz(tmp_path_factory):
    """Images at the default data.image_size (32), with labels and motion masks."""
    images, labels = make_images(16, size=32)
    masks = (images[..., 0] > 150).astype(np.uint8)
    path = tmp_path_factory.mktemp("data32") / "images.npz"
    np.savez(path, images=images, labels=labels, masks=masks)
    return path


@pytest.fixture(scope="module")
def required_inputs(tmp_path_factory, default_size_npz) -> dict[str, list[str]]:
    """The inputs of `selfsup train NAME` per task, made as a user makes them: --data for
    most; multitask's default tasks include motion segmentation, which reads frames with
    motion masks (--videos); transitive reads a patch graph from `selfsup graph build`
    (--graph; the data are the patches the graph was built on)."""
    folder = tmp_path_factory.mktemp("inputs")
    # 24 tracks: enough pairs of each type for the default batch of 64 pairs (21 or 22 each)
    patches = tiny_patches(folder / "patches.npz", tracks=24, size=32)
    embed, graph = folder / "embed", folder / "graph.npz"
    assert main(["train", "counting", "--data", str(patches), "--out", str(embed),
                 "--steps", "1", "--quiet", *TINY_COUNTING]) == 0  # fmt: skip
    assert main(["graph", "build", "--patches", str(patches), "--embed", str(embed),
                 "--out", str(graph), "--quiet", "clusters=2", "neighbours=5",
                 "backend=torch"]) == 0  # fmt: skip
    data = ["--data", str(default_size_npz)]
    inputs = {name: data for name in list_tasks()}
    inputs["multitask"] = [*data, "--videos", str(default_size_npz)]
    inputs["transitive"] = ["--graph", str(graph)]
    return inputs


@pytest.mark.parametrize("name", list_tasks())
def test_default_settings_train(name, required_inputs, tmp_path):
    """No settings but the required inputs, and a batch of 8: the default 128 would make
    these the slowest tests here (up to 40 s a task on two cores) for no more coverage."""
    out = tmp_path / "run"
    argv = ["train", name, *required_inputs[name], "--out", str(out), "--steps", "2",
            "--quiet", "data.batch_size=8"]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["loss"]) for r in records)
    assert (out / "checkpoints" / "last.pt").is_file()
