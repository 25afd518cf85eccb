"""Checkpoints written atomically and read back with errors that name the file.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one (`os.replace` is atomic on POSIX), so a run killed at any moment leaves either
the previous checkpoint or the new one, never a half-written file.

Opening a checkpoint never runs code from it: a checkpoint holds only tensors and plain data
(dicts, lists, tuples, str, numbers, bool, None), it is read with `torch.load(weights_only=True)`,
and a file that holds anything else (for example a pickled object whose `__reduce__` would run
a command) is refused. `save_atomic` checks the same rule before writing, so a checkpoint that
could not be read back safely is caught when it is made, not when it is needed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model."""


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """torch.save `state` to `path` atomically (after checking it holds only plain data)."""
    check_plain(state)
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temporaries of a writer killed mid-save are never read; they only fill the disk.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        io_error = os_error_behind(err) if isinstance(err, Exception) else None
        if io_error is not None:
            raise CheckpointError(
                f"could not write checkpoint {path}: {io_error}; the previous "
                "checkpoint (if any) is intact"
            ) from err
        raise
    # Make the rename itself durable.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def os_error_behind(err: BaseException) -> OSError | None:
    """The OSError (disk full, permission denied) that caused `err`, if any: torch.save
    reports a failed write as a RuntimeError whose context is the OSError."""
    while err is not None:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU, or raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:  # torch's own error for this says nothing
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupted (an empty file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise CheckpointError(f"checkpoint {path} is unreadable or corrupted ({err})") from err
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data; refused to "
            f"open it, since unpickling them could run code from the file "
            f"({refused_global(str(err))})"
        ) from err
    except Exception as err:  # torch raises several types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupted ({err})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a selfsup checkpoint (no 'model' entry)")
    return state


def refused_global(message: str) -> str:
    """The one line of torch's long weights-only error that says what was refused."""
    _, _, detail = message.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else "not plain data"


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


PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype)


def check_plain(value: Any, where: str = "state") -> None:
    """Raise TypeError naming the entry when `value` holds something `weights_only` refuses."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, f"{where} key {key!r}")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN_TYPES):
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__name__}; store tensors and plain "
            "data only (convert numpy arrays with torch.from_numpy, objects to dicts)"
        )


def rng_states() -> dict[str, Any]:
    """The generators' states as tensors (plain data, so the checkpoint loads weights-only)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
