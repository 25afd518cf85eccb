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
- A command that fails writes nothing half: its output appears whole or not at all (one-file
  commands write at the end, or atomically; several-file commands other than `train` run under
  `nothing_half_written`). A failed `train` keeps its run folder: it resumes from there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
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
    if not out.strip():
        raise argparse.ArgumentTypeError(
            "an empty path would write into the current folder; name the folder to write"
        )
    try:
        is_file = Path(out).exists() and not Path(out).is_dir()
    except OSError as err:  # a name longer than the file system allows, ...
        raise argparse.ArgumentTypeError(f"{out[:60]}...: {err.strerror}") from err
    if is_file:
        raise argparse.ArgumentTypeError(
            f"{out}: is a file, but this command writes a folder of files here; give a folder "
            "path (created if missing)"
        )
    return out


class OutputOverInput(ValueError):
    """An output path is, or is inside, an input of the same command."""


def check_outputs_apart(
    outputs: dict[str, str], data: dict[str, str], models: dict[str, str] | None = None
) -> None:
    """Refuse an output that would destroy what the same command reads: one that is an input;
    one inside a data folder (`data`: images, frames, patches; a file added there becomes
    data); one that would replace a file inside a model's folder (`models`: run folders,
    graphs; a new result file beside a run's checkpoint is allowed, as the benchmarks write
    theirs). Options map to paths as typed; paths that do not exist are not inputs."""
    models = models or {}
    for option, out in outputs.items():
        target = Path(out).resolve()
        for source_option, source in {**data, **models}.items():
            read = Path(source)
            if not read.exists():
                continue
            read = read.resolve()
            inside = read.is_dir() and read in target.parents
            replaces = inside and (source_option in data or target.exists())
            if target == read or replaces:
                where = "is" if target == read else "is inside"
                raise OutputOverInput(
                    f"{option} {out}: {where} {source} ({source_option}), which this command "
                    "reads; it would be overwritten: write somewhere else"
                )


def default_cache_dir() -> Path:
    """`$SELFSUP_CACHE`, else `$XDG_CACHE_HOME/selfsup`, else `~/.cache/selfsup`."""
    if "SELFSUP_CACHE" in os.environ:
        return Path(os.environ["SELFSUP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfsup"


def private_twin(path: Path) -> Path:
    """A name beside `path` that no other writer uses (this process's pid and a random
    token; ending like `path`, so np.savez adds nothing), after removing the twins of
    writers that died mid-write (their pid no longer runs). Created by the caller, so the
    file or folder gets the usual permissions."""
    for stale in path.parent.glob(f".{path.name}.*.tmp{path.suffix}"):
        pid = stale.name[len(path.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            remove(stale)
    token = secrets.token_hex(4)
    return path.parent / f".{path.name}.{os.getpid()}-{token}.tmp{path.suffix}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def written_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` for the block to write, renamed onto `path` when the
    block ends without error and removed when it fails: readers see the old file or the new
    one whole, never a part. The name is this writer's own, so two jobs filling one cache at
    once never write into each other's file: the last rename wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = private_twin(path)
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def save_npz(path: str | Path, arrays: dict) -> None:
    """`arrays` as an uncompressed .npz at `path`, written atomically (`written_atomically`)."""
    import numpy as np

    with written_atomically(path) as temporary:
        np.savez(temporary, **arrays)


class FolderBusy(ValueError):
    """Another process is writing the run folder this one would write."""


LOCK_NAME = ".lock"


def hold_folder(folder: Path, wait: bool = False):
    """An exclusive claim on the run folder `folder` (created if missing) for as long as this
    process lives or until the returned file is closed, so that a second `train` into the
    same folder (a sweep given one --out twice, a command rerun while the first still runs)
    is refused instead of both writing one checkpoint and one metrics file. With `wait`, wait
    for the holder to end instead (a shared cache entry that another job is training).
    The claim is an advisory lock (flock) on `folder/.lock`, which the system drops when its
    holder dies, so a killed run never leaves its folder claimed. Returns None where the
    system has no flock (Windows): no claim there."""
    try:
        import fcntl
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise FolderBusy(
            f"{folder}: another selfsup process{f' (pid {holder})' if holder else ''} is "
            "writing this run folder; wait for it to end, or give another --out"
        ) from None
    except OSError as err:  # a file system without locks (some network mounts): go on
        handle.close()
        print(f"note: {folder} cannot be locked ({err.strerror}): nothing stops a second "
              "training into it meanwhile", file=sys.stderr)  # fmt: skip
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def fill_folder_once(folder: Path, fill: Callable[[Path], None], done: str) -> None:
    """Make `folder` by `fill(staging)` in a staging folder of this writer's own, then rename
    it into place: a cache entry that jobs running at once may all compute appears whole, the
    first to finish publishes it, and the others' work is dropped. `done`: the file whose
    presence marks the folder whole (a folder without it, left by a killed run, is redone)."""
    if (folder / done).is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = private_twin(folder)
    staging.mkdir()
    try:
        fill(staging)
        if folder.exists() and not (folder / done).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a killed run's part: redone
        try:
            staging.rename(folder)
        except OSError:  # another job published it first (a rename onto a folder with files)
            if not (folder / done).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def nothing_half_written(out: str | Path) -> Iterator[None]:
    """Around a command that writes `out` (a file, or a folder of files): if the command fails,
    what it wrote there is removed again, so it leaves its output whole or not at all.

    `out` and any parent folders the command created go; in a folder that existed before,
    only the files and folders that appeared in it go. The error itself propagates unchanged.
    """
    out = Path(out)
    created = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)
    before = set(out.rglob("*")) if out.is_dir() else set()
    try:
        yield
    except Exception:
        if created is not None:
            remove(created)
        elif out.is_dir():
            for path in sorted(set(out.rglob("*")) - before, key=lambda p: -len(p.parts)):
                remove(path)
        raise


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
