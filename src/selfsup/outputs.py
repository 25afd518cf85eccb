"""Where commands write, and how the commands that read their outputs find them: one rule.

- A command whose output is **one file** (`graph build`, `export`, `embed`, `eval --json`)
  writes it at `--out`. A path without an extension gets the command's (`g` -> `g.npz`); a
  folder (one that exists, or a path ending in `/`) gets the file under its default name
  (`graphs/` -> `graphs/graph.npz`). The command prints the path it wrote.
- A command whose output is **several files** (`train`, `demo`, `report`, `inspect`,
  `video masks|patches|track`, `graph show`, `eval finetune --out`) writes a folder at
  `--out`, created if missing; a file already there is an error.
- A command that reads another's output accepts what the user typed for `--out`: the file, the
  same path without the extension the writer added, or a folder holding the file under its
  default name. A path that is none of these is an error naming it and what was expected.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def output_file(out: str | Path, default_name: str) -> Path:
    """The file a one-file command writes for `--out`: `out/default_name` for a folder,
    `out` plus `default_name`'s extension when `out` has none, else `out` itself."""
    path = Path(out)
    if path.is_dir() or str(out).endswith("/"):
        return path / default_name
    if not path.suffix:
        return path.with_name(path.name + Path(default_name).suffix)
    return path


def input_file(path: str | Path, default_name: str) -> Path:
    """The file a reader opens for `path` (see `output_file`): `path/default_name` for a
    folder, `path` when it exists, else `path` with `default_name`'s extension when that
    exists; otherwise `path` unchanged (which does not exist: the caller says what it wanted)."""
    path = Path(path)
    if path.is_dir():
        return path / default_name
    if not path.exists():
        with_extension = path.with_name(path.name + Path(default_name).suffix)
        if with_extension.is_file():
            return with_extension
    return path


def output_folder(out: str) -> str:
    """argparse type of a several-file command's `--out`: a folder, or a path to create one."""
    if Path(out).exists() and not Path(out).is_dir():
        raise argparse.ArgumentTypeError(
            f"{out}: is a file, but this command writes a folder of files here; give a folder "
            "path (created if missing)"
        )
    return out


def default_cache_dir() -> Path:
    """`$SELFSUP_CACHE`, else `$XDG_CACHE_HOME/selfsup`, else `~/.cache/selfsup`."""
    if "SELFSUP_CACHE" in os.environ:
        return Path(os.environ["SELFSUP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfsup"
