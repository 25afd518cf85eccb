"""Fine-tuning, and the supervised baseline: the `supervised` task through the training loop.

Fine-tuning starts the supervised task from a run's backbone with a 10x lower backbone learning
rate; the supervised baseline trains the same architecture from scratch on the labelled data
for the same number of steps. Both write an ordinary run folder (resumable, with metrics),
then are scored by classifying the test images (centre view, no augmentation).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from selfsup.checkpoint import load as load_checkpoint
from selfsup.config import ExperimentConfig, resolve
from selfsup.data.trunk_input import input_of_checkpoint
from selfsup.eval.linear import accuracy
from selfsup.eval.protocol import EvalOptions, LabelledImages
from selfsup.eval.settings import FinetuneSettings
from selfsup.runs import checkpoint_path
from selfsup.runtime import autocast, resolve_device, resolve_precision
from selfsup.tasks import task_config_class
from selfsup.tasks.supervised import classify


def supervised_config(
    backbone: dict,
    data_path: str,
    image_size: int,
    settings: FinetuneSettings,
    init_backbone: str = "",
    backbone_scale: float = 1.0,
) -> ExperimentConfig:
    """A `supervised` run of `backbone` (a config dict) on labelled data."""
    values = {
        "task": "supervised",
        "backbone": backbone,
        "data": {"path": data_path, "image_size": image_size, "batch_size": settings.batch_size},
        "optim": {"lr": settings.lr, "warmup_steps": min(100, settings.steps // 10)},
        "train": {
            "steps": settings.steps,
            "seed": settings.seed,
            "init_backbone": init_backbone,
            "log_every": max(1, min(20, settings.steps)),
        },
        "checkpoint": {"every": max(1, min(500, settings.steps))},
        "supervised": {"backbone_lr_scale": backbone_scale},
    }
    return resolve(values, task_config_class)


@torch.no_grad()
def test_accuracy(run_folder: Path, test: LabelledImages, options: EvalOptions) -> dict:
    """Top-1 / top-5 of a supervised run's classifier on the test images."""
    from selfsup.train import build_model

    path = checkpoint_path(run_folder)
    state = load_checkpoint(path)
    cfg = resolve(state["config"], task_config_class)
    trunk_input = input_of_checkpoint(state)
    model = build_model(cfg, load_init=False)
    model.load_state_dict(state["model"])
    device = resolve_device(options.device)
    amp_dtype = resolve_precision(options.precision, device)
    model.eval().to(device)
    logits = []
    for start in range(0, len(test.images), options.batch_size):
        batch = test.images[start : start + options.batch_size].to(device)
        x = trunk_input.prepare(batch).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits.append(classify(model.backbone, model.head, x).float().cpu())
    scores = torch.cat(logits)
    return {"top1": accuracy(scores, test.labels), "top5": accuracy(scores, test.labels, 5)}


def run_supervised(
    cfg: ExperimentConfig,
    folder: Path,
    test: LabelledImages,
    options: EvalOptions,
    cached: bool = False,
) -> dict:
    """Train (or resume, or reuse) a supervised run and score it on the test images.
    `cached`: `folder` is a cache entry other jobs may be training too: wait for them."""
    from selfsup.train import train

    started = time.perf_counter()
    train(cfg, folder, progress=options.progress, wait_for_folder=cached)
    scores = test_accuracy(folder, test, options)
    return {**scores, "run": str(folder), "seconds": round(time.perf_counter() - started, 1)}
