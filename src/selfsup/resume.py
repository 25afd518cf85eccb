"""Resuming a run folder: the same model, and the same settings unless a change is asked for.

A rerun of `selfsup train` into a folder that holds a checkpoint continues that run. It
must continue it with the settings it was trained with: a changed `optim.lr` or
`data.image_size` would otherwise train on with the new value while `config.yaml` still
says the old one. So a resume whose settings differ from the checkpoint's is refused,
naming each key and both values, unless the user names the keys to change
(`selfsup train ... --change optim.lr`); then the change is recorded in the run folder's
`changes.jsonl` with the step from which it holds, and `config.yaml` says the new value.

Some settings change how a run is carried out, not what it learns, and may differ freely
(FREE_TO_CHANGE); `train.steps` is how a finished run is trained further.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import yaml

from selfsup import checkpoint
from selfsup.config import ConfigError, ExperimentConfig, dump
from selfsup.outputs import written_atomically

FREE_TO_CHANGE = {
    "train.steps",
    "train.log_every",
    "train.logger",
    "train.image_every",
    "train.dist_timeout",
    "train.heap",
    "checkpoint.every",
    "data.workers",
    "data.cache",
    "data.cache_max_gb",
    "data.device_cache_max_gb",
}


def check_same_model(saved: dict, cfg: ExperimentConfig, path: Path) -> None:
    """Refuse to resume a checkpoint made for another task or backbone."""
    current = dump(cfg)
    for key in ("task", "backbone"):
        if saved.get(key) != current[key]:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} was trained with {key}={saved.get(key)} but the config asks "
                f"for {key}={current[key]}; use another --out folder"
            )


def flat(values: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flat(value, name))
        else:
            out[name] = value
    return out


def settings_changes(saved: dict, cfg: ExperimentConfig) -> list[tuple[str, object, object]]:
    """(key, checkpoint's value, config's value) of every setting that differs, other than
    those free to change; keys the checkpoint predates are not changes."""
    before, now = flat(saved), flat(dump(cfg))
    return [
        (key, before[key], value)
        for key, value in now.items()
        if key in before and before[key] != value and key not in FREE_TO_CHANGE
    ]


def accept_changes(
    saved: dict, cfg: ExperimentConfig, folder: Path, step: int, allowed: Iterable[str]
) -> None:
    """Refuse changed settings the user did not name; record the named ones (from `step`)."""
    changes = settings_changes(saved, cfg)
    allowed = set(allowed)
    refused = [(key, old, new) for key, old, new in changes if key not in allowed]
    if refused:
        listed = "; ".join(f"{key}: {old!r} in the run, {new!r} now" for key, old, new in refused)
        keys = " ".join(key for key, _, _ in refused)
        raise ConfigError(
            f"{folder} was trained with other settings ({listed}); to change them from step "
            f"{step} on pass --change {keys}, or train into another --out folder"
        )
    if changes:
        with (folder / "changes.jsonl").open("a") as log:
            for key, old, new in changes:
                log.write(json.dumps({"step": step, "key": key, "from": old, "to": new}) + "\n")
        write_config(cfg, folder)
        print(f"changed from step {step}: " + ", ".join(f"{k}={v!r}" for k, _, v in changes))


def write_config(cfg: ExperimentConfig, folder: Path) -> None:
    """The run's config.yaml, replaced whole."""
    with written_atomically(folder / "config.yaml") as temporary:
        Path(temporary).write_text(yaml.safe_dump(dump(cfg), sort_keys=False))
