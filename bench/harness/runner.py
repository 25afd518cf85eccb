"""`Bench`, what every section reads, and the loop that runs sections into a results file."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .sizes import Sizes
from .timing import synchronize

Section = Callable[["Bench"], dict]


@dataclass
class Bench:
    """What every section reads: sizes, device, data, options, and the results so far."""

    sizes: Sizes  # one profile of harness/sizes.py
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
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def seconds_left(self) -> float:
        return self.deadline - (time.perf_counter() - self.started)


def run_sections(
    bench: Bench,
    sections: dict[str, Section],
    names: list[str],
    save: Callable[[str], None],
    expected: dict[str, float] | None = None,
    stamp: dict | None = None,
) -> list[str]:
    """Run sections `names` into `bench.results` (each with its seconds and `stamp`),
    calling `save` after each so that a run stopped from outside keeps what it measured. A
    section expected to take longer than is left before the deadline is skipped; one that
    fails is recorded with its message and the others still run. The sections that failed."""
    failed = []
    for name in names:
        left = bench.seconds_left()
        if left < (expected or {}).get(name, 0):
            bench.results[name] = {"skipped": f"{left:.0f} s left before the deadline"}
            print(f"[{name}] skipped: {bench.results[name]['skipped']}", flush=True)
        else:
            print(f"[{name}]", flush=True)
            started = time.perf_counter()
            try:
                row = sections[name](bench)
            except Exception as error:  # one broken section must not cost the others' time
                row = {"error": f"{type(error).__name__}: {error}"}
                print(f"  failed: {row['error']}", flush=True)
                failed.append(name)
            synchronize(bench.device)
            row["seconds"] = round(time.perf_counter() - started, 1)
            bench.results[name] = {**row, **(stamp or {})}
        save(name)
    return failed
