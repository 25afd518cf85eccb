"""Performance: where a training step's time goes, how the loop compares with a reference SSL
library, how close it runs to the hardware, and how training and evaluation grow with
processes and data.

    python bench/perf.py                      # every section -> bench/results/perf.json
    python bench/perf.py --quick              # tiny sizes, 1-2 min -> bench/work/perf_quick.json
    python bench/perf.py --only overhead hardware --tasks counting exemplar
    python bench/perf.py --only peer --compile        # ours also compiled
    python bench/perf.py --only overhead --compile    # also time train.compile=true

Sections, one module each in bench/perfkit/ (`--only NAME ...`; with --only the named
sections replace theirs in the results file):

- overhead: per pretext task, images/s of the full training step as `selfsup train` makes it
  (batch from the in-memory cache, views, forward, backward, optimizer step, logging) against
  the bare forward + backward + step on views built once; overhead = 1 - full / bare, with
  the share of the full step spent in each phase.
- peer: LightlySSL's SimCLR (its own transforms through a torch DataLoader, torchvision
  ResNet-18 with the CIFAR stem) against our exemplar task with InfoNCE (pre-activation
  ResNet-18, small stem) on the same images, batch and precision, in alternating timed
  windows; both bare steps on in-memory tensors for reference; with --compile, ours also
  through torch.compile (compile time recorded). Learning per CPU-minute, the kNN accuracy of
  every task and of the peer after the same CPU budget, is bench/learning.py.
- hardware: square matmul throughput (fp32 and bf16) and each task's training FLOPs per
  image, so that measured images/s become a fraction of what the cores can do.
- scaling: images/s with 1 and 2 DDP processes (torchrun, gloo on CPU), and the time of
  feature extraction, the linear probe and graph building against data size, plotted log-log.
- profile: torch.profiler on a few full steps of counting, exemplar and the peer section's
  InfoNCE ResNet-18 step: the most expensive operations of the whole step and of view
  building alone.

Timed contenders run in alternating windows (A, B, A, B, ...) after warm-up steps, so a slow
spell of a shared machine hits all of them alike; each reports the median window. Every
section records its settings, the commands that reproduce it and the machine. Data:
$SELFSUP_DATA/cifar10 (see bench/run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfkit.common import FULL, QUICK, TASKS, Bench, cifar
from perfkit.hardware import hardware_section
from perfkit.overhead import overhead_section
from perfkit.peer import peer_section
from perfkit.profile import profile_section
from perfkit.scaling import scaling_section
from run import RESULTS, ROOT, WORK, data_dir, machine, portable

from selfsup.runtime import cpu_has_amx, resolve_device, resolve_precision

SECTIONS = ("overhead", "peer", "hardware", "scaling", "profile")

RUNNERS: dict[str, Callable[[Bench], dict]] = {
    "overhead": overhead_section,
    "peer": peer_section,
    "hardware": hardware_section,
    "scaling": scaling_section,
    "profile": profile_section,
}


def host(bench: Bench) -> dict:
    return {**machine(), "amx": cpu_has_amx(), "precision": bench.precision}


def scrubbed(text: str) -> str:
    """No machine paths in the results file."""
    return (
        text.replace(sys.executable, "python")  # first: the interpreter may sit under ROOT
        .replace(str(data_dir()), "$SELFSUP_DATA")
        .replace(str(ROOT) + "/", "")
        .replace(str(Path.home()), "~")
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="sections to run")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="overhead: tasks")
    parser.add_argument("--compile", action="store_true", help="also time train.compile=true")
    parser.add_argument(
        "--peer-workers", type=int, default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of the peer (LightlySSL's benchmark uses 8)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="results file (default by mode); figures go to OUT without .json"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not cifar("train").exists():
        sys.exit(f"CIFAR-10 not found at {cifar('train')}; set SELFSUP_DATA")
    device = resolve_device("auto")
    out = args.out or (WORK / "perf_quick.json" if args.quick else RESULTS / "perf.json")
    bench = Bench(
        sizes=QUICK if args.quick else FULL,
        args=args,
        device=device,
        amp_dtype=resolve_precision("auto", device),
        figures=out.parent / out.stem,  # plots and profiles beside the results file
        done={},
    )
    results = json.loads(out.read_text()) if out.exists() and args.only else {}
    command = shlex.join(["python", "bench/perf.py", *sys.argv[1:]])
    for name in args.only or SECTIONS:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        section = RUNNERS[name](bench)
        bench.done[name] = section
        results[name] = {
            **section,
            "mode": "quick" if args.quick else "full",
            "seconds": round(time.perf_counter() - started, 1),
            "command": command,
            "sizes": asdict(bench.sizes),
            "machine": host(bench),
        }
        out.parent.mkdir(parents=True, exist_ok=True)  # written after every section
        out.write_text(scrubbed(json.dumps(results, indent=2)) + "\n")
    print(f"wrote {portable([out])}")


if __name__ == "__main__":
    main()
