"""What must hold on a GPU: training steps never make the host wait for the device, and the
same views and losses come out on CUDA as on the CPU, within stated tolerances.

Every test here needs CUDA (the `cuda` fixture skips without it); the CPU halves of these
properties are covered by the CPU tests of the same functions.
"""

import numpy as np
import pytest
import torch

from selfsup import train as loop
from selfsup.config import resolve
from selfsup.data.streams import Images
from selfsup.metrics import MetricWindow
from selfsup.tasks import list_tasks, task_config_class
from tests.conftest import make_images
from tests.test_task_contract import BATCH, IMAGE_SIZE, TINY, batch_inputs, build

# Tasks that read only the training images (the others need a graph or motion data besides).
IMAGE_TASKS = [
    name
    for name in list_tasks()
    if all(isinstance(w, Images) and w.key == "data.path" for w in build(name).inputs())
]


@pytest.fixture(scope="module")
def labelled_masked_npz(tmp_path_factory):
    """Images with labels and motion masks, so any image task can train on them."""
    images, labels = make_images(16, size=IMAGE_SIZE)
    masks = (images[..., 0] > 150).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=labels, masks=masks)
    return path


def gpu_config(name: str, data, *, cache: str = "auto"):
    values = {
        "task": name,
        name: TINY.get(name, {}),
        "backbone": {"name": "alexnet_small"},
        "data": {
            "path": str(data),
            "image_size": IMAGE_SIZE,
            "batch_size": BATCH,
            "workers": 0,
            "cache": cache,
        },
        "train": {"device": "cuda", "steps": 100, "log_every": 100},
        "optim": {"warmup_steps": 1},
    }
    return resolve(values, task_config_class)


@pytest.mark.parametrize("cache", ["auto", "memory"])
@pytest.mark.parametrize("name", IMAGE_TASKS)
def test_training_steps_never_wait_for_the_gpu(name, cache, cuda, labelled_masked_npz, tmp_path):
    """Batch, views, forward, backward, optimizer step and metric bookkeeping of a step, run
    under torch.cuda.set_sync_debug_mode("error"): any host sync (`.item()`, a blocking copy,
    a data-dependent shape) raises. `auto` keeps this small data on the GPU; `memory` feeds
    pinned host batches."""
    cfg = gpu_config(name, labelled_masked_npz, cache=cache)
    run = loop.prepare(cfg, tmp_path / "run", progress=False)
    trained, scaler, amp_dtype = loop.training_setup(run)
    window = MetricWindow()
    batches = run.data.batches(0)

    def one_step() -> None:
        step, fields = next(batches)
        views = loop.step_views(run, step, fields)
        window.add(loop.optimize(run, trained, views, step, scaler, amp_dtype), step)

    for _ in range(2):  # first steps choose cuDNN kernels and fill the allocator's cache
        one_step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            one_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert window.first_nonfinite() is None
    assert set(window.read()) >= {"loss"}


@pytest.mark.parametrize("benchmark", [True, False])
def test_cudnn_times_its_algorithms_as_train_cudnn_benchmark_says(
    benchmark, cuda, labelled_masked_npz, tmp_path
):
    cfg = gpu_config("counting", labelled_masked_npz)
    cfg.train.cudnn_benchmark = benchmark
    before = torch.backends.cudnn.benchmark
    try:
        loop.training_setup(loop.prepare(cfg, tmp_path / "run", progress=False))
        assert torch.backends.cudnn.benchmark is benchmark
    finally:
        torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("name", list_tasks())
def test_views_on_cuda_match_the_cpu(name, cuda):
    """The same (seed, step) gives the same views on both devices: random parameters are
    drawn on the host. Resampling kernels may round differently: within 1e-3 on [0, 1] pixel
    values (a quarter of one 8-bit level)."""
    task = build(name)
    fields = batch_inputs(task, seed=3)
    on_cpu = task.make_views(**fields, generator=torch.Generator().manual_seed(7))
    on_gpu = task.make_views(
        **{k: v.to(cuda) for k, v in fields.items()}, generator=torch.Generator().manual_seed(7)
    )
    for key, expected in flatten(on_cpu).items():
        actual = flatten(on_gpu)[key].cpu()
        assert actual.shape == expected.shape, key
        if expected.is_floating_point():
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-3, msg=key)
        else:
            assert torch.equal(actual, expected), key


@pytest.mark.parametrize("name", list_tasks())
def test_losses_on_cuda_match_the_cpu(name, cuda):
    """The same weights on the same views give the same loss in fp32, with TF32 off on both
    matrix paths: within 1e-4 relative."""
    task = build(name).eval()  # eval: batch statistics are not updated, dropout is off
    fields = batch_inputs(task, seed=5)
    views = task.make_views(**fields, generator=torch.Generator().manual_seed(2))
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        on_cpu = task(views)["loss"]
        on_gpu = task.to(cuda)(loop.to_device(views, cuda, channels_last=False))["loss"]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    torch.testing.assert_close(on_gpu.detach().cpu(), on_cpu.detach(), rtol=1e-4, atol=1e-6)


def flatten(views: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested views (multi-task) as one dict keyed by dotted paths."""
    out = {}
    for key, value in views.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
