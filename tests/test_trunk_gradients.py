"""Multi-task loss scales: each task's gradient into the trunk is measured, logged, and with
`multitask.trunk_grad_norm` rescaled so that every task's has the same norm."""

import json

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.config import parse_overrides, resolve
from selfsup.tasks import build_task, task_config_class
from selfsup.train import train
from tests.test_multitask import RESNET

TASKS = ["relative-position", "colorization", "exemplar", "rotation"]


def multitask(lasso: str, target: float):
    values = {
        "task": "multitask",
        "multitask": {"tasks": TASKS, "lasso": lasso, "trunk_grad_norm": target},
    }
    torch.manual_seed(0)
    trunk = build_backbone("resnet18", stem="small", width=0.125, num_stages=2)
    return build_task("multitask", resolve(values, task_config_class).task_config, trunk), trunk


def gradients_into_trunk(task, trunk, loss_scale: float = 1.0) -> list[torch.Tensor]:
    """One step's backward; the norm of what each trunk read (one per task) got back, seen
    from the trunk's side: every map a read returns is a copy that only the reader uses (a
    lasso unit's own output also feeds the next unit), and keeps its gradient."""
    reads: list[list[torch.Tensor]] = []
    forward_layers = trunk.forward_layers

    def recording(x, layers):
        maps = {name: fmap.clone() for name, fmap in forward_layers(x, layers).items()}
        for fmap in maps.values():
            fmap.retain_grad()
        reads.append(list(maps.values()))
        return maps

    trunk.forward_layers = recording
    trunk.forward = lambda x: recording(x, [trunk.layer_names[-1]])[trunk.layer_names[-1]]
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = task(task.make_views(images, torch.Generator().manual_seed(0)))
    (out["loss"] * loss_scale).backward()
    assert len(reads) == len(TASKS)  # every task reads the trunk once, in task order
    return [torch.stack([m.grad.square().sum() for m in maps]).sum().sqrt() for maps in reads]


@pytest.mark.parametrize("lasso", ["off", "on"])
def test_each_tasks_trunk_gradient_norm_is_measured_in_unscaled_units(lasso):
    task, trunk = multitask(lasso, 0.0)
    seen = gradients_into_trunk(task, trunk, loss_scale=1024.0)  # as fp16 loss scaling does
    logged = task.backward_metrics()
    assert list(logged) == [f"{name}/trunk_grad_norm" for name in TASKS]
    for name, norm in zip(TASKS, seen):
        torch.testing.assert_close(
            logged[f"{name}/trunk_grad_norm"] * 1024, norm, rtol=1e-4, atol=0
        )
    assert max(seen) > 2 * min(seen)  # the plain sum: the tasks' scales differ


@pytest.mark.parametrize("lasso", ["off", "on"])
def test_with_trunk_grad_norm_every_task_reaches_the_trunk_with_that_norm(lasso):
    task, trunk = multitask(lasso, 0.05)
    seen = gradients_into_trunk(task, trunk, loss_scale=1024.0)
    for norm in seen:  # the same norm for every task, in unscaled units
        torch.testing.assert_close(norm / 1024, torch.tensor(0.05), rtol=1e-4, atol=0)
    # Only the trunk's share is rescaled: a head's gradient is its loss's own.
    plain, plain_trunk = multitask(lasso, 0.0)
    gradients_into_trunk(plain, plain_trunk, loss_scale=1024.0)
    for name in TASKS:
        head = dict(task.subtasks[name].head.named_parameters())
        for key, value in plain.subtasks[name].head.named_parameters():
            torch.testing.assert_close(head[key].grad, value.grad)


def test_training_logs_each_tasks_loss_and_trunk_gradient_norm(tiny_npz, tmp_path):
    overrides = ["task=multitask", f"data.path={tiny_npz}", *RESNET, "train.steps=2",
                 "multitask.tasks=[rotation,exemplar]",
                 "multitask.trunk_grad_norm=0.01"]  # fmt: skip
    run = train(resolve(parse_overrides(overrides), task_config_class), tmp_path / "mt", False)
    records = [json.loads(line) for line in (tmp_path / "mt" / "metrics.jsonl").open()]
    for record in records:
        for name in ("rotation", "exemplar"):
            assert record[f"{name}/loss"] > 0 and record[f"{name}/trunk_grad_norm"] > 0
    assert run.model.gradients.target_norm == 0.01
