"""Checkpoints written atomically and read back with errors that name the file.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one (`os.replace` is atomic on POSIX), so a run killed at any moment leaves either
the previous checkpoint or the new one, never a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model."""


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """torch.save `state` to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {err}; the previous "
                "checkpoint (if any) is intact"
            ) from err
        raise
    # Make the rename itself durable.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU, or raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupted ({err})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a selfsup checkpoint (no 'model' entry)")
    return state


def load_module_state(
    module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path
) -> None:
    """load_state_dict with a message that says which checkpoint does not fit and how."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first_lines = "; ".join(str(err).splitlines()[:3])
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (another backbone or task?): {first_lines}"
        ) from err


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
