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
    return sorted(_TASKS)


def get_task_class(name: str) -> type[PretextTask]:
    if name not in _TASKS:
        raise ConfigError(f"task: unknown task {name!r}; available: {', '.join(list_tasks())}")
    return _TASKS[name]


def task_config_class(name: str) -> type:
    return get_task_class(name).config_class


def build_task(name: str, config: Any, backbone: Backbone) -> PretextTask:
    return get_task_class(name)(config, backbone)
