"""Performance on a CPU: where a training step's time goes, how the loop compares with a
reference SSL library, how close it runs to the hardware, and how training and evaluation grow
with processes and data.

    python bench/perf.py                      # every section -> bench/results/perf.json
    python bench/perf.py --quick              # tiny sizes, 1-2 min -> bench/work/perf_quick.json
    python bench/perf.py --only overhead hardware --tasks counting exemplar
    python bench/perf.py --only peer --compile        # ours also compiled
    python bench/perf.py --only overhead --compile    # also time train.compile=true

A profile of bench/harness at the cpu sizes (docs/performance.md says what each section
measures). With --only the named sections replace theirs in the results file.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from harness import overhead, peer, profile, scaling
from harness.data import subset_npz
from harness.record import cifar, earlier, machine, parser, portable, results_file, write_json
from harness.runner import PROFILES, Bench, finish, run_sections
from harness.stepper import TASKS

from selfsup.runtime import cpu_has_amx, resolve_device, resolve_precision

SECTIONS = {
    "overhead": overhead.overhead_section,
    "peer": peer.peer_section,
    "hardware": overhead.hardware_section,
    "scaling": scaling.scaling_section,
    "profile": profile.profile_section,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = parser(__doc__, "--quick", only=SECTIONS)
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="overhead: tasks")
    p.add_argument("--compile", action="store_true", help="also time train.compile=true")
    p.add_argument(
        "--peer-workers", type=int, default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of the peer (LightlySSL's benchmark uses 8)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="results file; figures go to OUT without .json")
    args = p.parse_args(argv)
    if not cifar("train").exists():
        sys.exit(f"CIFAR-10 not found at {cifar('train')}; set SELFSUP_DATA")
    sizes = PROFILES["quick" if args.quick else "cpu"]
    out = results_file("perf", args.quick, args.out)
    device = resolve_device("auto")
    bench = Bench(
        sizes=sizes,
        device=device,
        amp_dtype=resolve_precision("auto", device),
        data={"cifar": subset_npz(cifar("train"), sizes.train_images)},
        figures=out.parent / out.stem,  # plots and profiles beside the results file
        tasks=args.tasks or list(TASKS),
        compile=args.compile,
        peer_workers=args.peer_workers,
        results=earlier(out, args.only),
    )
    stamp = {
        "mode": "quick" if args.quick else "full",
        "command": shlex.join(["python", "bench/perf.py", *argv]),
        "sizes": asdict(sizes),
        "machine": {**machine(), "amx": cpu_has_amx(), "precision": bench.precision},
    }
    names = [name for name in SECTIONS if name in (args.only or SECTIONS)]
    failed = run_sections(
        bench, SECTIONS, names, lambda _: write_json(out, bench.results), stamp=stamp
    )
    print(f"wrote {portable([out])}")
    finish(failed, "sections")


if __name__ == "__main__":
    main()
