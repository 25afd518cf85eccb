"""`precision=auto` on a CPU: time the run's own step in bf16 and in fp32, take the faster.

Whether bf16 autocast pays on a CPU depends on the CPU and the workload, not on a flag one
can read: on an AMD EPYC with avx512_bf16 and no AMX, bf16 ran a ResNet-18 InfoNCE step
1.78x faster than fp32, while other AVX-512 machines measured bf16 convolutions slower. So
`auto` measures: a few forward and backward passes of the model on its own first batch in
each dtype, interleaved so that a machine getting busier hurts both alike, bounded to a few
seconds. The answer is cached per CPU model, torch version, thread count and workload under
the cache folder, and recorded in the run folder (`precision.json`), so a resumed run keeps
the dtype it started with. Runs started together measure one at a time (a lock beside the
cache), so runs of one workload make one choice rather than one each. CUDA devices keep
their rule (bf16 where supported, else fp16): there bf16 is never slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from selfsup.outputs import default_cache_dir, written_atomically
from selfsup.runtime import autocast

DTYPES = {"bf16": torch.bfloat16, "fp32": None}
RECORD_NAME = "precision.json"
CACHE_NAME = "precision.json"


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype `auto` took, and why: `rates` in items per second per dtype when measured,
    `source` is `measured`, `cached` (an earlier measurement of this workload on this CPU)
    or `run` (the run folder's record, on resume)."""

    choice: str  # "bf16" or "fp32"
    rates: dict[str, float]
    source: str
    cpu: str
    torch: str

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.choice]

    def describe(self) -> str:
        rates = ", ".join(f"{name} {rate:.1f} items/s" for name, rate in self.rates.items())
        how = {"measured": "measured now", "cached": "measured before on this CPU"}
        when = how.get(self.source, "as the run began")
        return f"precision auto -> {self.choice} ({rates}; {when})"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def cache_key(workload: str) -> str:
    """What the measurement depends on: the CPU, torch, its threads and the workload."""
    parts = [cpu_model(), torch.__version__, str(torch.get_num_threads()), workload]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def time_dtypes(
    step: Callable[[torch.dtype | None], None], budget_s: float, max_rounds: int = 4
) -> dict[str, float]:
    """Seconds per step of `step(dtype)` in each dtype: one warm-up each, then rounds of one
    step per dtype (interleaved) until `budget_s` is spent or `max_rounds` ran; the fastest
    step of each counts. A step slower than the whole budget is timed once, warm-up
    included, so a paper-scale model on a CPU costs two steps, not minutes."""
    best: dict[str, float] = {}
    started = time.perf_counter()
    for name, dtype in DTYPES.items():  # warm-up: first-call costs (allocator, kernels)
        tick = time.perf_counter()
        step(dtype)
        best[name] = time.perf_counter() - tick
    for _ in range(max_rounds):
        if time.perf_counter() - started > budget_s:
            break
        for name, dtype in DTYPES.items():
            tick = time.perf_counter()
            step(dtype)
            best[name] = min(best[name], time.perf_counter() - tick)
    return best


def read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or torn: measure again


def measure(
    step: Callable[[torch.dtype | None], None],
    items: int,
    workload: str,
    cache_dir: Path | None = None,
    budget_s: float = 3.0,
) -> PrecisionChoice:
    """The faster of bf16 and fp32 for `step` (one forward and backward of `items` items
    in the given autocast dtype, None for fp32), from the cache when this CPU, torch and
    `workload` were measured before."""
    path = (cache_dir or default_cache_dir()) / CACHE_NAME
    key = cache_key(workload)
    with measuring_alone(path):
        cached = read_cache(path).get(key)
        if cached:
            return PrecisionChoice(**{**cached, "source": "cached"})
        return measured(step, items, budget_s, path, key)


def measured(
    step: Callable[[torch.dtype | None], None], items: int, budget_s: float, path: Path, key: str
) -> PrecisionChoice:
    """Time `step` in each dtype and cache the faster under `key` in `path`."""
    seconds = time_dtypes(step, budget_s)
    rates = {name: round(items / max(s, 1e-9), 2) for name, s in seconds.items()}
    choice = PrecisionChoice(
        choice=max(rates, key=rates.get),
        rates=rates,
        source="measured",
        cpu=cpu_model(),
        torch=torch.__version__,
    )
    # The folder was made for the lock (measuring_alone); where it could not be, nor can the
    # cache be written, and a read-only cache only costs a measurement next time.
    with contextlib.suppress(OSError):
        entries = read_cache(path)
        entries[key] = asdict(choice)
        write_json(path, entries)
    return choice


@contextlib.contextmanager
def measuring_alone(path: Path) -> Iterator[None]:
    """Held while this process reads the cache and, on a miss, measures: two runs of one
    workload started together (a sweep, a run and its reference) would otherwise both miss
    and, timing each other's load, could choose differently. A lock on a file beside the
    cache; where none can be taken (no fcntl, a read-only cache), measure without it."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.with_suffix(".lock").open("a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        yield


@contextlib.contextmanager
def untouched(model: nn.Module):
    """Run trial steps that leave no trace: the model's buffers (batch-norm statistics),
    its gradients and the global random state are as they were afterwards, so a run that
    measured trains exactly as one told its precision."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for p in model.parameters():
            p.grad = None
        torch.set_rng_state(rng)


def training_step(
    model: nn.Module, views: dict, device: torch.device
) -> Callable[[torch.dtype | None], None]:
    """One forward and backward of `model` on `views` in a dtype, for `measure`; parameters
    keep their values (no optimizer step)."""

    def step(dtype: torch.dtype | None) -> None:
        with autocast(device, dtype):
            loss = model(views)["loss"]
        loss.backward()
        model.backward_metrics()  # drain what the trial backward measured

    return step


def read_record(folder: Path) -> PrecisionChoice | None:
    """The choice a run made when it began, from its folder (None: not recorded)."""
    try:
        fields = json.loads((folder / RECORD_NAME).read_text())
        return PrecisionChoice(**{**fields, "source": "run"})
    except (OSError, ValueError, TypeError):
        return None


def write_record(folder: Path, choice: PrecisionChoice) -> None:
    write_json(folder / RECORD_NAME, asdict(choice))


def write_json(path: Path, value: dict) -> None:
    with written_atomically(path) as temporary:
        temporary.write_text(json.dumps(value, indent=1) + "\n")
