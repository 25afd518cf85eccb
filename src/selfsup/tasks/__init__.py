"""Pretext tasks, found by name through a registry (one file per task).

Each task file registers itself (`selfsup.tasks.registry`) when imported; importing this
package imports them all.
"""

from __future__ import annotations

from selfsup.data.views import MEAN, STD
from selfsup.tasks import (  # noqa: F401  (imported to register them; keep in step with the folder)
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
from selfsup.tasks.base import PretextTask
from selfsup.tasks.registry import (
    build_task,
    get_task_class,
    list_tasks,
    register_task,
    task_config_class,
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
