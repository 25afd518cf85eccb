"""Pretext tasks, found by name through a registry (one file per task)."""

from __future__ import annotations

from typing import Any

from selfsup.backbones import Backbone
from selfsup.config import ConfigError
from selfsup.data.views import MEAN, STD
from selfsup.tasks.base import PretextTask

_TASKS: dict[str, type[PretextTask]] = {}


def register_task(cls: type[PretextTask]) -> type[PretextTask]:
    """Class decorator: make a task available to `selfsup train <name>` and configs."""
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task_class(name: str) -> type[PretextTask]:
    if name not in _TASKS:
        raise ConfigError(f"task: unknown task {name!r}; available: {', '.join(list_tasks())}")
    return _TASKS[name]


def task_config_class(name: str) -> type:
    return get_task_class(name).config_class


def build_task(name: str, config: Any, backbone: Backbone) -> PretextTask:
    return get_task_class(name)(config, backbone)


# Registration happens on import; keep this list in step with the files in this folder.
from selfsup.tasks import (  # noqa: E402, F401
    colorization,
    counting,
    exemplar,
    jigsaw,
    motion_segmentation,
    multitask,
    relative_position,
    rotation,
    supervised,
    transitive,
)

__all__ = [
    "MEAN",
    "STD",
    "PretextTask",
    "build_task",
    "get_task_class",
    "list_tasks",
    "register_task",
    "task_config_class",
]
