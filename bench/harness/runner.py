"""Running jobs into a results file: `Sizes`, how much work each does (one column of the table
in sizes.yaml, a row per size and a column per profile: quick, cpu and gpu; a script reads
`PROFILES["quick"]` with --quick, else its own); `Bench`, what every section reads; and
`run_all`, the one loop every script runs its sections, rows, entries or contenders through."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

import torch
import yaml

from .record import say
from .stepper import synchronize

PROFILE_NAMES = ("quick", "cpu", "gpu")
TABLE: dict[str, list] = yaml.safe_load(Path(__file__).with_name("sizes.yaml").read_text())
Sizes = make_dataclass("Sizes", list(TABLE), frozen=True)
Sizes.__doc__ = "How much work each section does: one column of sizes.yaml."
PROFILES = {  # lists as tuples: sizes are constants, as their frozen dataclass is
    name: Sizes(
        **{size: tuple(v) if isinstance(v := row[i], list) else v for size, row in TABLE.items()}
    )
    for i, name in enumerate(PROFILE_NAMES)
}
Section = Callable[["Bench"], dict]


# Autocast dtype -> the short name results use (None: no autocast, fp32).
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class Bench:
    """What every section reads: sizes, device, data, options, and the results so far."""

    sizes: Sizes  # one profile of harness/sizes.yaml
    device: torch.device
    amp_dtype: torch.dtype | None
    data: dict[str, Path]  # "cifar": training images; gpu's sections also read "tiny"
    figures: Path  # plots and profiles go here
    tasks: list[str]  # what the overhead section times (TASKS names, or INFONCE)
    compile: bool = False  # also time the steps through torch.compile
    peer_workers: int = 0  # DataLoader workers of the peer
    extra: list[str] = field(default_factory=list)  # settings added to every timed command
    deadline: float = math.inf  # seconds after `started` past which no section starts
    results: dict = field(default_factory=dict)  # the results file: sections build on others
    peak_tflops: float | None = None  # the matmul rate, once the hardware section measured it
    started: float = field(default_factory=time.perf_counter)

    @property
    def precision(self) -> str:
        """The training precision's short name: fp32, bf16 or fp16 (autocast dtype)."""
        return PRECISION_NAMES[self.amp_dtype]

    def seconds_left(self) -> float:
        return self.deadline - (time.perf_counter() - self.started)


def run_all(
    names: Iterable[str],
    job: Callable[[str], dict | None],
    done: Callable[[str, dict], None],
    parallel: int = 1,
) -> list[str]:
    """Run `job(name)` for each name, up to `parallel` at once, handing each result to `done`
    as it ends (a stopped run keeps what it measured); a job that raises hands {"error": ...}
    instead, one that returns None did not start. The names of the jobs that failed."""
    failed = []

    def attempt(name: str) -> tuple[str, dict | None]:
        try:
            return name, job(name)
        except Exception as error:
            failed.append(name)
            say(f"{name}: FAILED: {type(error).__name__}: {error}")
            return name, {"error": f"{type(error).__name__}: {error}"}

    with ThreadPoolExecutor(max_workers=parallel) as pool:  # its threads only if parallel > 1
        started = [pool.submit(attempt, name) for name in names] if parallel > 1 else []
        ended = (f.result() for f in as_completed(started)) if started else map(attempt, names)
        for name, result in ended:
            if result is not None:
                done(name, result)
    return failed


def run_sections(
    bench: Bench,
    sections: dict[str, Section],
    names: list[str],
    save: Callable[[str], None],
    expected: dict[str, float] | None = None,
    stamp: dict | None = None,
) -> list[str]:
    """Run sections `names` into `bench.results` with their seconds and `stamp`, `save` after
    each; one `expected` to overrun the deadline is skipped. The sections that failed."""

    def section(name: str) -> dict:
        left = bench.seconds_left()
        if left < (expected or {}).get(name, 0):
            say(f"[{name}] skipped: {left:.0f} s left before the deadline")
            return {"skipped": f"{left:.0f} s left before the deadline"}
        say(f"[{name}]")
        started = time.perf_counter()
        row = sections[name](bench)
        synchronize(bench.device)
        return {**row, "seconds": round(time.perf_counter() - started, 1), **(stamp or {})}

    def record(name: str, row: dict) -> None:
        bench.results[name] = row
        save(name)

    return run_all(names, section, record)


def finish(failed: list[str], what: str) -> None:
    """Exit non-zero naming the jobs that failed, once the others have run."""
    if failed:
        sys.exit(f"{what} that failed: {', '.join(failed)} (their errors are above)")
