"""What every bench script shares: where inputs and results live, the options they have in
common, running commands, and what a results file records: the machine, and commands and
text without machine paths, written whole; the plots beside it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "bench" / "work"  # runs, caches and quick results (git-ignored)
SCRATCH = WORK / "perf"  # the timed sections' run folders and data subsets
RESULTS = ROOT / "bench" / "results"
ASSETS = ROOT / "src" / "selfsup" / "assets"  # the bundled CIFAR-10 sample
# Every child process imports selfsup from this checkout, also on a machine where nothing is
# installed (the GPU machine); a script that runs several at once shares the threads out here.
IMPORTS = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in IMPORTS if path)}
OPTIONS = {  # the options several scripts take, spelled and explained once
    "--quick": {"action": "store_true", "help": "tiny sizes and data: a smoke run on any CPU"},
    "--steps": {"type": int, "help": "fixed pretraining steps for every row (default: its own)"},
    "--results": {"type": Path, "help": "results JSON (default by mode)"},
    "--deadline": {"type": float, "metavar": "SECONDS", "help": "start nothing due to end later"},
}


def parser(doc: str, *shared: str, only: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """A script's parser, described by the first paragraph of its docstring, with the
    `shared` OPTIONS and, given the names a run may choose from, --only NAME ..."""
    built = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for option in shared:
        built.add_argument(option, **OPTIONS[option])
    if only is not None:
        built.add_argument("--only", nargs="+", choices=list(only), help="run these (default: all)")
    return built


def data_dir() -> Path:
    """`$SELFSUP_DATA`, else the `shared/data` folder beside the repository."""
    return Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))


def cifar(split: str) -> Path:
    return data_dir() / "cifar10" / f"{split}_jpeg.npz"


def results_file(name: str, quick: bool, given: Path | None = None) -> Path:
    """`given`, else bench/results/<name>.json, or bench/work/<name>_quick.json with --quick
    (a smoke run never overwrites the figures)."""
    return given or (WORK / f"{name}_quick.json" if quick else RESULTS / f"{name}.json")


def earlier(path: Path, only: list[str] | None) -> dict:
    """With --only, the results file so far, whose other parts the run keeps; else nothing."""
    return json.loads(path.read_text()) if only and path.is_file() else {}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def scrubbed(text: str) -> str:
    """`text` without machine paths: the interpreter first (it may sit under ROOT, whose
    prefix would be cut from it), then the data folder, the checkout and the home folder."""
    return (
        text.replace(sys.executable, "python")
        .replace(str(data_dir()), "$SELFSUP_DATA")
        .replace(str(ROOT) + "/", "")
        .replace(str(Path.home()), "~")
    )


def portable(command: list) -> str:
    """The command as a user would type it: no machine paths."""
    return scrubbed(shlex.join(str(c) for c in command))


def scrub(folder: Path) -> None:
    """Rewrite machine paths in the reports written under `folder` as portable ones."""
    for path in folder.rglob("*"):
        if path.suffix in (".md", ".json"):
            path.write_text(scrubbed(path.read_text()))


def write_json(path: Path, results: dict) -> None:
    """The results file without machine paths, replaced whole: a run stopped while writing
    leaves the previous file."""
    from selfsup.outputs import written_atomically

    with written_atomically(path) as temporary:
        temporary.write_text(scrubbed(json.dumps(results, indent=2, default=float)) + "\n")


@contextlib.contextmanager
def plotted(path: Path, size: tuple[float, float]) -> Iterator:
    """Matplotlib axes (no display needed) whose figure is saved to `path` at the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=size)
    yield axes
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


class Ran(NamedTuple):
    seconds: float
    stdout: str


def run(command: list, threads: int | None = None) -> Ran:
    """Run a command from the checkout, echoed first, its output captured: its wall-clock
    seconds and standard output. `threads` caps the child's thread pools. A failure raises
    with the command and the end of its error output."""
    say(f"$ {portable(command)}")
    env = {**CHILD_ENV, **(thread_caps(threads) if threads else {})}
    started = time.perf_counter()
    done = subprocess.run(
        [str(c) for c in command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"{portable(command)} failed:\n{done.stderr[-3000:]}")
    return Ran(time.perf_counter() - started, done.stdout)


def thread_caps(threads: int) -> dict[str, str]:
    """Environment settings that cap a process's thread pools at `threads`."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def in_child(script: str, argv: list, threads: int | None = None) -> dict:
    """Run `python SCRIPT ARGV` (a script's own child mode), and return the JSON row it prints
    as its last line."""
    return json.loads(run([sys.executable, script, *argv], threads).stdout.splitlines()[-1])


def selfsup(*argv: str) -> float:
    """Run `selfsup ARGV --quiet` as a user would; its wall-clock seconds."""
    return run([sys.executable, "-m", "selfsup", *argv, "--quiet"]).seconds


def figures(row: dict, *keys: str) -> str:
    """`key value, ...` of those of a row's figures that are set: a progress line's body."""
    return ", ".join(f"{key} {row[key]}" for key in keys if row.get(key) is not None)


def say(line: str) -> None:
    """One whole line at once: jobs running in threads print without splicing lines."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
