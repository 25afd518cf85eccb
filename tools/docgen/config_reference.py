"""`reference/config.md`: generated from the config dataclasses (`selfsup.config.field_docs`)."""

from __future__ import annotations

import dataclasses
import sys

from .pages import md_table, yaml_value


def field_metadata(cls: type, dotted: str) -> dict:
    """The `param` metadata (choices, bounds) of a dotted key of dataclass `cls`."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        cls = type(getattr(cls(), part))
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == leaf)


def constraint(meta: dict) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(f"`{c}`" for c in meta["choices"])
    if meta.get("low") is not None:
        return f"{'>' if meta.get('low_exclusive') else '>='} {meta['low']:g}"
    return ""


def config_table(cls: type, prefix: str = "") -> str:
    from selfsup.config import field_docs

    rows = []
    for key, type_name, default, help_text in field_docs(cls):
        allowed = constraint(field_metadata(cls, key))
        full = f"{prefix}.{key}" if prefix else key
        rows.append([f"`{full}`", type_name, f"`{yaml_value(default)}`", help_text, allowed])
    return md_table(["key", "type", "default", "help", "allowed"], rows)


def config_reference() -> str:
    from selfsup.config import ExperimentConfig, field_docs
    from selfsup.graph.build import GraphConfig
    from selfsup.tasks import get_task_class, list_tasks, task_config_class
    from selfsup.video.motion import MotionMaskConfig
    from selfsup.video.patches import PatchConfig

    parts = [
        "# Configuration keys",
        "Generated from the config dataclasses (`selfsup.config.field_docs`) at every docs "
        "build. A run's settings are resolved in three layers: these defaults, then a YAML "
        "file (`--config FILE`), then dotted `key=value` arguments; unknown keys, ill-typed "
        "and out-of-range values are errors that name the key. `selfsup config TASK` prints "
        "the resolved YAML with each key's help as a comment.",
        "## Every run",
        "Sections shared by all tasks. The task's own settings live in a section named after "
        "the task (below).",
    ]
    sections = list(dict.fromkeys(key.split(".")[0] for key, *_ in field_docs(ExperimentConfig)))
    for section in sections:
        value = getattr(ExperimentConfig(), section)
        parts.append(f"### `{section}`")
        if dataclasses.is_dataclass(value):
            parts.append(config_table(type(value), section))
        else:  # a top-level key (`task`)
            rows = [
                [f"`{k}`", t, f"`{yaml_value(d)}`", h, constraint(field_metadata(cls, k))]
                for cls in [ExperimentConfig]
                for k, t, d, h in field_docs(cls)
                if k == section
            ]
            parts.append(md_table(["key", "type", "default", "help", "allowed"], rows))
    parts.append("## Tasks")
    parts.append(
        "One section per task of `selfsup list tasks`, under the task's name (`counting.margin=5`)."
    )
    for name in list_tasks():
        doc = (sys.modules[get_task_class(name).__module__].__doc__ or "").strip()
        parts.append(f"### `{name}`")
        if doc:
            parts.append(doc.splitlines()[0])
        parts.append(config_table(task_config_class(name), name))
    parts.append("## Video and graph tools")
    parts.append(
        "These are `key=value` arguments of `selfsup video` and `selfsup graph build`, "
        "without a section prefix for `video masks`, with `masks.`, `proposals.` and `track.` "
        "for `video patches` and `video track`."
    )
    for title, cls in (
        ("`selfsup video masks`", MotionMaskConfig),
        ("`selfsup video patches`, `selfsup video track`", PatchConfig),
        ("`selfsup graph build`", GraphConfig),
    ):
        parts += [f"### {title}", config_table(cls)]
    return "\n\n".join(parts) + "\n"
