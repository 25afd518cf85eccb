"""The GPU benchmark: one prepared script that measures selfsup on one GPU within 9 minutes,
its own set-up included, and runs on a CPU with --quick (so CI runs every line of it).

    python bench/gpu.py --prepare      # once, where the data is: inputs -> bench/work/gpu_inputs
    python bench/gpu.py                # on the GPU machine -> bench/results/gpu.json
    python bench/gpu.py --quick        # tiny sizes, no demo, on any machine -> bench/work
    python bench/gpu.py --only tasks peer

A profile of bench/harness at the gpu sizes; a section that would end past `--deadline` is
skipped. docs/performance.md ("On a GPU") says what each section measures.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # nothing installed

from harness import gpu_sections, overhead, peer
from harness import record as rec
from harness.data import carry, data_root, subset_npz
from harness.runner import PROFILES, Bench, finish, run_sections
from harness.stepper import INFONCE, TASKS

from selfsup.outputs import written_atomically
from selfsup.runtime import resolve_device, resolve_precision

SECTIONS = {
    "hardware": overhead.hardware_section,
    "tasks": overhead.overhead_section,  # every task, and the peer comparison's step
    "peer": peer.peer_section,
    "counting_paper": gpu_sections.counting_paper_section,
    "demo": gpu_sections.demo_section,
    "decode": gpu_sections.decode_section,
    "cuda_tests": gpu_sections.cuda_tests_section,
    "compile": gpu_sections.compile_section,
}
INPUTS = rec.WORK / "gpu_inputs"
CIFAR, TINY = "cifar10/train_jpeg.npz", "tinyimagenet/train_jpeg.npz"  # in a data folder
# With --quick (CI, 2 CPU cores) every section but the demo runs once, on the two tasks that
# cover both backbones; the demo's probes alone take minutes there (tests/test_demo.py runs it).
QUICK_TASKS = ["counting", INFONCE]


def prepare_inputs() -> None:
    """Data subsets and the peer's wheel -> INPUTS (run where the data and PyPI are)."""
    shutil.rmtree(INPUTS, ignore_errors=True)
    # lightly's loss, heads and transforms import nothing beyond torch, torchvision and PIL.
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    rec.run([*download, "-d", str(INPUTS / "wheels"), "lightly==1.6.0"])
    cifar = subset_npz(rec.data_dir() / CIFAR, PROFILES["gpu"].train_images)
    carry({CIFAR: cifar, TINY: rec.data_dir() / TINY}, INPUTS, "inputs")


def pack(out: Path, results: Path, log: str) -> None:
    """Results and log in one archive (the GPU machine sends back a few files only), and the
    results beside it; both replaced whole, as they are rewritten after every section."""
    archive_path = out / "gpu_results.tar.gz"
    with written_atomically(archive_path) as packing, tarfile.open(packing, "w:gz") as archive:
        archive.add(results, arcname=results.name)
        info = tarfile.TarInfo("gpu_log.txt")
        info.size = len(log.encode())
        archive.addfile(info, io.BytesIO(log.encode()))
    with written_atomically(out / results.name) as copying:
        copying.write_text(results.read_text())


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    p = rec.parser(__doc__, "--quick", "--results", only=SECTIONS)
    p.add_argument("--prepare", action="store_true", help="write bench/work/gpu_inputs")
    p.add_argument("--deadline", type=float, default=510.0, help="seconds to stop starting at")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--out", type=Path, help="also pack the results and log in OUT")
    args = p.parse_args(argv)
    if args.prepare:
        prepare_inputs()
        return
    sys.path.extend(str(w) for w in sorted((INPUTS / "wheels").glob("*-py3-none-any.whl")))
    rec.WORK.mkdir(parents=True, exist_ok=True)
    # The data: from the bundled CIFAR-10 sample with --quick (nothing else needed), else from
    # the prepared inputs, else from the shared data folder.
    root, sizes = data_root(INPUTS, args.quick), PROFILES["quick" if args.quick else "gpu"]
    if not (root / CIFAR).is_file():
        sys.exit(f"no inputs: run `python bench/gpu.py --prepare` where {root / CIFAR} exists")
    device = resolve_device(args.device)
    path = rec.results_file("gpu", args.quick, args.results)
    results = rec.earlier(path, args.only)  # the sections of an earlier run on this device
    bench = Bench(
        sizes=sizes,
        device=device,
        amp_dtype=resolve_precision("auto", device),
        data={"cifar": subset_npz(root / CIFAR, sizes.train_images), "tiny": root / TINY},
        figures=path.parent / path.stem,
        tasks=QUICK_TASKS if args.quick else [*TASKS, INFONCE],
        peer_workers=0 if args.quick else gpu_sections.loader_workers(),
        # Quick runs decode their few images in the main process: worker start-up would
        # dominate them.
        extra=["data.workers=0"] if args.quick else [],
        deadline=args.deadline,
        results=results if results.get("device") == str(device) else {},
        started=started,
    )
    bench.results.update(machine=rec.machine(), device=str(device), date=time.strftime("%Y-%m-%d"))
    log = []

    def save(name: str) -> None:
        bench.results["seconds"] = round(time.perf_counter() - bench.started, 1)
        rec.write_json(path, bench.results)
        log.append(f"{name}: {json.dumps(bench.results[name])}\n")
        if args.out:
            pack(args.out, path, "".join(log))

    chosen = args.only or [name for name in SECTIONS if not (args.quick and name == "demo")]
    # The hardware section always runs first: the tasks' matmul shares are of its rate.
    names = ["hardware", *(name for name in SECTIONS if name in chosen and name != "hardware")]
    expected = {} if args.quick else gpu_sections.EXPECTED_SECONDS
    failed = run_sections(bench, SECTIONS, names, save, expected)
    print(f"results: {rec.portable([path])} ({bench.results['seconds']:.0f} s)")
    finish(failed, "sections")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
