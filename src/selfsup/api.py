"""selfsup from Python: a config from a task, a preset and settings; features of a trained or
exported backbone. The rest of the public surface (`selfsup.__all__`) is the library's own
functions, reached from the package: the losses, the batched views, the tasks, training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from selfsup.config import ConfigError, ExperimentConfig, load_yaml, merge, resolve, set_dotted
from selfsup.presets import config_file


def make_config(
    task: str,
    preset: str | Path | None = None,
    data: str | Path | None = None,
    settings: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The resolved, validated config of a training run, as `selfsup train` builds it: the
    task, a preset name or YAML file (`selfsup list configs`), the training data, and
    settings by their dotted keys (`selfsup config TASK` lists them), which win.

    >>> import selfsup
    >>> cfg = selfsup.make_config("counting", "counting_small", data="images.npz",
    ...                           settings={"train.steps": 100, "optim.lr": 0.01})
    >>> cfg.task, cfg.train.steps, cfg.optim.lr, cfg.backbone.name
    ('counting', 100, 0.01, 'alexnet_small')
    >>> selfsup.make_config("counting", settings={"optim.lr": -1})
    Traceback (most recent call last):
    ...
    selfsup.config.ConfigError: optim.lr: must be > 0.0, got -1.0
    """
    sections = [{"data": {"path": str(data)}}] if data is not None else []
    return configure(task, preset, [*sections, nested(settings or {})])


def configure(task: str, preset: str | Path | None, sections: list[dict]) -> ExperimentConfig:
    """The preset's values (if any), then each of `sections` (nested dicts) over them, for
    `task`, resolved once: the one way `make_config` and `selfsup train` build a config."""
    from selfsup.tasks import task_config_class

    values: dict = load_yaml(config_file(str(preset))) if preset else {}
    if values.get("task", task) != task:
        raise ConfigError(
            f"task: the config file is for {values['task']!r} but the command trains {task!r}"
        )
    values["task"] = task
    for section in sections:
        values = merge(values, section)
    return resolve(with_motion_data(values), task_config_class)


def pretrain(config: ExperimentConfig, out: str | Path, progress: bool = True):
    """Train `config` into run folder `out`, as `selfsup train` does (resuming from `out`
    when it holds a checkpoint of the same settings); returns the run (`.folder`, `.model`,
    `.cfg`). Evaluate, embed or export the folder afterwards.

    >>> import selfsup, tempfile
    >>> cfg = selfsup.make_config("counting", "counting_small", data=selfsup.sample_data(),
    ...                           settings={"train.steps": 2, "data.batch_size": 16})
    >>> run = selfsup.pretrain(cfg, tempfile.mkdtemp(), progress=False)
    >>> (run.folder / "checkpoints" / "last.pt").is_file(), run.cfg.train.steps
    (True, 2)
    """
    from selfsup.train import train

    return train(config, out, progress=progress)


def sample_data(split: str = "train") -> Path:
    """The bundled CIFAR-10 sample (`train` or `test`: an `.npz` of JPEG bytes with labels and
    class names), the data of `selfsup demo` and of examples.

    >>> import numpy as np, selfsup
    >>> with np.load(selfsup.sample_data("test")) as sample:
    ...     sorted(sample.files)
    ['class_names', 'jpeg', 'labels', 'names', 'offsets']
    """
    from selfsup.demo import sample_path

    return sample_path(split)


def nested(settings: dict[str, Any]) -> dict:
    """`{"optim.lr": 0.01}` -> `{"optim": {"lr": 0.01}}`.

    >>> nested({"optim.lr": 0.01, "optim.schedule": "step", "task": "rotation"})
    {'optim': {'lr': 0.01, 'schedule': 'step'}, 'task': 'rotation'}
    """
    tree: dict = {}
    for key, value in settings.items():
        if (part := set_dotted(tree, key, value)) is not None:
            raise ConfigError(f"{key}: {part} is a value, not a section")
    return tree


def with_motion_data(values: dict) -> dict:
    """Multi-task motion data given as videos or frame folders: their motion masks, computed
    once and cached, become the data training reads (`multitask.videos` then names them)."""
    videos = values.get("multitask", {}).get("videos") if values.get("task") == "multitask" else ""
    if not videos or not isinstance(videos, str):
        return values

    if not all(Path(p).exists() for p in videos.split(",") if p):
        return values  # opening the data names what is missing
    from selfsup.video.cache import mask_dataset

    return merge(values, {"multitask": {"videos": mask_dataset(videos)}})


def embed(
    model: str | Path,
    images: torch.Tensor,
    layer: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
) -> torch.Tensor:
    """(N, D) float32 features of uint8 images (N, 3, H, W) from a trained run folder, a
    checkpoint, an exported `.safetensors` or `random:<backbone>`: globally average-pooled
    `layer` (default: the deepest layer that trained), the images fed as the run was (its
    input record: colour, grayscale or lightness; its mean and std).

    >>> import selfsup, torch
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> selfsup.embed("random:resnet18", images, layer="layer1").shape
    torch.Size([4, 64])
    """
    from selfsup.features import extract_features
    from selfsup.runs import load_backbone
    from selfsup.runtime import resolve_device, resolve_precision

    loaded = load_backbone(str(model))
    layer = layer or loaded.final_layer
    where = resolve_device(device)
    features = extract_features(
        loaded.reader([layer], flag="layer"),
        images,
        [layer],
        trunk_input=loaded.input,
        device=where,
        amp_dtype=resolve_precision("auto", where),
        max_dims=0,
        batch_size=batch_size,
        progress=False,
    )
    return features[layer].float()
