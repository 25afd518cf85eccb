"""Where inputs and results live, and what a results file records: the machine, and commands
and text without machine paths, written whole; the plots beside it."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "bench" / "work"  # runs, caches and quick results (git-ignored)
SCRATCH = WORK / "perf"  # the timed sections' run folders and data subsets
RESULTS = ROOT / "bench" / "results"
ASSETS = ROOT / "src" / "selfsup" / "assets"  # the bundled CIFAR-10 sample


def data_dir() -> Path:
    """`$SELFSUP_DATA`, else the `shared/data` folder beside the repository."""
    return Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))


def cifar(split: str) -> Path:
    return data_dir() / "cifar10" / f"{split}_jpeg.npz"


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


def run(command: list[str]) -> float:
    """Run a command from the checkout, echoed first; its wall-clock seconds."""
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - started
