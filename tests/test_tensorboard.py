"""`train.logger=tensorboard`: metrics.jsonl's scalars and the tasks' view grids as event
files, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from selfsup.config import ConfigError
from selfsup.tasks import list_tasks
from selfsup.train import train
from tests.helpers import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)
from tests.test_task_contract import batch_inputs, build

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed: pip install 'selfsup[tensorboard]'",
).EventAccumulator

BOARD = ["train.logger=tensorboard", "train.image_every=3", "train.log_every=2"]


def read_events(run):
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_scalars_are_metrics_jsonl_and_views_are_images(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=6", *BOARD), run, progress=False)
    events, records = read_events(run), metrics(run)
    keys = {key for record in records for key in record} - {"step"}
    assert {"loss", "lr", "images_per_sec", "equivariance"} <= keys
    assert keys <= set(events.Tags()["scalars"])
    for key in keys:
        logged = [(r["step"], r[key]) for r in records if key in r]
        read = [(e.step, e.value) for e in events.Scalars(key)]
        assert [step for step, _ in read] == [step for step, _ in logged], key
        assert [value for _, value in read] == pytest.approx([v for _, v in logged], rel=1e-6)
    images = events.Images("views/tiles_and_downsampled")
    assert [image.step for image in images] == [1, 3, 6]  # the first step, every 3rd
    assert images[0].width == 6 * (64 + 2) + 2  # T1..T4, D x, D y of 8 px, shown at 64 px


def test_a_resumed_run_appends_without_repeating_steps(tiny_npz, tmp_path):
    """A run killed after logging steps its checkpoint does not hold logs them again on
    resume; TensorBoard keeps the second copy only, as metrics.jsonl does."""
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=4", *BOARD), run, progress=False)
    at_four = tmp_path / "step4.pt"
    shutil.copy(run / "checkpoints" / "last.pt", at_four)
    train(tiny_config(tiny_npz, "train.steps=6", *BOARD), run, progress=False)
    shutil.copy(at_four, run / "checkpoints" / "last.pt")  # as if killed before saving step 6
    train(tiny_config(tiny_npz, "train.steps=6", *BOARD), run, progress=False)
    events = read_events(run)
    assert [e.step for e in events.Scalars("loss")] == [r["step"] for r in metrics(run)]
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6]
    assert [e.step for e in events.Images("views/tiles_and_downsampled")] == [1, 3, 6]


def test_without_the_package_the_run_is_refused_before_it_starts(tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"pip install 'selfsup\[tensorboard\]'"):
        train(tiny_config(tiny_npz, "train.steps=2", *BOARD), run, progress=False)
    assert not run.exists()


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_draws_its_views(name):
    task = build(name)
    views = task.make_views(**batch_inputs(task), generator=torch.Generator().manual_seed(0))
    grids = task.view_grids(views, count=3)
    assert grids
    for key, grid in grids.items():
        assert grid.dim() == 3 and grid.shape[0] == 3, key
        assert grid.dtype == torch.float32 and grid.min() >= 0 and grid.max() <= 1, key
