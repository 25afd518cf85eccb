"""The registry of pretext tasks: each task file registers its class under its name."""

from __future__ import annotations

from typing import Any

from selfsup.backbones import Backbone
from selfsup.config import ConfigError
from selfsup.tasks.base import PretextTask

_TASKS: dict[str, type[PretextTask]] = {}


def register_task(cls: type[PretextTask]) -> type[PretextTask]:
    """Class decorator: make a task available to `selfsup train <name>` and configs."""
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    """The registered task names, sorted.

    >>> import selfsup
    >>> {"counting", "exemplar", "multitask", "transitive"} <= set(selfsup.list_tasks())
    True
    """
    return sorted(_TASKS)


def get_task_class(name: str) -> type[PretextTask]:
    if name not in _TASKS:
        raise ConfigError(f"task: unknown task {name!r}; available: {', '.join(list_tasks())}")
    return _TASKS[name]


def task_config_class(name: str) -> type:
    return get_task_class(name).config_class


def build_task(name: str, config: Any, backbone: Backbone) -> PretextTask:
    """Task `name` with its settings `config` (the task's section of a resolved config) on
    `backbone`: a module whose `make_views` builds a step's inputs and whose forward returns
    the loss.

    >>> import selfsup, torch
    >>> cfg = selfsup.make_config("rotation", settings={"backbone.name": "alexnet_small"})
    >>> backbone = selfsup.build_backbone("alexnet_small")
    >>> task = selfsup.build_task("rotation", cfg.task_config, backbone)
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> views = task.make_views(images=images, generator=torch.Generator().manual_seed(0))
    >>> out = task(views)
    >>> out["loss"].shape, out["loss"].requires_grad
    (torch.Size([]), True)
    """
    return get_task_class(name)(config, backbone)
