"""The sections only bench/gpu.py runs (on a CPU too, with --quick): counting at paper scale,
`selfsup demo` end to end, JPEG decoding, the CUDA tests, and each train.compile mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .commands import INFONCE, command_text, loop_config, run_folder, task_argv, train_argv
from .lightly_peer import decode_pil
from .overhead import measure_task
from .record import ROOT, WORK, portable
from .runner import Bench
from .stepper import LoopStepper
from .timing import alternate, warm_up

# Rough seconds each section of bench/gpu.py takes on an H200, to skip what would overrun
# the deadline.
EXPECTED_SECONDS = {
    "hardware": 5, "tasks": 90, "peer": 60, "counting_paper": 60, "demo": 60, "decode": 40,
    "cuda_tests": 60, "compile": 150,
}  # fmt: skip
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def loader_workers() -> int:
    """DataLoader workers on the GPU machine: every core but two (the loop's and the GPU's)."""
    return max(1, (os.cpu_count() or 2) - 2)


def counting_paper_section(bench: Bench) -> dict:
    """Counting at paper scale (the counting_alexnet_imagenet preset: 256 px images, 228 px
    crops, 114 px tiles, AlexNet) on Tiny ImageNet upscaled to 256 px."""
    base = ["counting", "--config", "counting_alexnet_imagenet"]
    workers = [f"data.workers={loader_workers()}"]
    argv = train_argv(base, bench.data["tiny"], bench.sizes.paper_batch, bench.extra or workers)
    row = measure_task(bench, argv)
    print(
        f"  counting at paper scale: full {row['full_images_per_sec']:.0f} img/s, bare "
        f"{row['bare_images_per_sec']:.0f} img/s ({row['data_cache']} cache)",
        flush=True,
    )
    return row


class PhaseClock:
    """Seconds since `started` at which the demo printed each phase's header ([1/2], [2/2])."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.tail: list[str] = []

    def see(self, text: str) -> None:
        for line in text.splitlines():
            self.tail = [*self.tail[-20:], line]
            phase = re.match(r"\[(\d)/2\]", line)
            if phase:
                self.marks[phase.group(1)] = time.perf_counter() - self.started


def demo_section(bench: Bench) -> dict:
    """`selfsup demo` in a child process, exactly as a user runs it, its two phases timed
    from the moment each phase's header line appears."""
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        clock = PhaseClock()
        argv = [sys.executable, "-m", "selfsup", "demo", "--out", str(Path(folder) / "demo")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as child:
            for line in child.stdout:
                clock.see(line)
        total = time.perf_counter() - clock.started
    if child.returncode != 0 or set(clock.marks) != {"1", "2"}:
        tail = "\n".join(clock.tail)
        raise RuntimeError(f"selfsup demo failed or printed no phase headers:\n{tail}")
    row = {
        "command": "selfsup demo",
        "total_seconds": round(total, 1),
        "pretrain_seconds": round(clock.marks["2"] - clock.marks["1"], 1),
        "probe_seconds": round(total - clock.marks["2"], 1),
    }
    print(
        f"  selfsup demo: {row['total_seconds']:.0f} s in all, pretraining "
        f"{row['pretrain_seconds']:.0f} s, probes {row['probe_seconds']:.0f} s",
        flush=True,
    )
    return row


def write_jpegs(source: Path, folder: Path, count: int, side: tuple[int, int]) -> Path:
    """`count` photographs as a user's image folder would hold them: source images upscaled
    to `side` and saved as JPEG (quality 90), one file each."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = decode_pil(source)
    for i in range(count):
        image = images[i % len(images)].resize(side, Image.Resampling.BICUBIC)
        image.save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def decode_section(bench: Bench) -> dict:
    """Streamed full-size JPEGs fitted to `decode_size` px: `data.decode=device` against PIL
    in DataLoader workers, images/s."""
    from selfsup.data.throughput import decode_throughput

    sizes, workers = bench.sizes, loader_workers()
    side = sizes.jpeg_side
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        images = write_jpegs(bench.data["tiny"], Path(folder), sizes.decode_images, side)
        common = {
            "device": bench.device,
            "workers": workers,
            "batch_size": sizes.decode_batch,
            "max_images": sizes.decode_images,
        }
        rates = {
            decode: round(decode_throughput(images, sizes.decode_size, decode=decode, **common), 1)
            for decode in ("cpu", "device")
        }
    print(
        f"  JPEG {side[0]}x{side[1]} -> {sizes.decode_size} px: PIL in {workers} workers "
        f"{rates['cpu']:.0f} img/s, on {bench.device.type} {rates['device']:.0f} img/s",
        flush=True,
    )
    return {
        "images": f"{sizes.decode_images} JPEGs of {side[0]}x{side[1]} "
        "(Tiny ImageNet upscaled, quality 90)",
        "size": sizes.decode_size,
        "workers": workers,
        "pil_workers_images_per_sec": rates["cpu"],
        "device_decode_images_per_sec": rates["device"],
    }


def compile_section(bench: Bench) -> dict:
    """Each train.compile mode on the InfoNCE step: first-step seconds and steady images/s.
    max-autotune, the slowest to compile, goes last, and only while the deadline allows.
    Compiling on a CPU takes minutes: there (--quick) the eager step alone is timed."""
    rows = {}
    argv = [*task_argv(INFONCE, bench.data["cifar"], bench.sizes), *bench.extra]
    modes = ("off", *COMPILE_MODES) if bench.device.type == "cuda" else ("off",)
    for mode in modes:
        if mode == "max-autotune" and bench.seconds_left() < 240:
            rows[mode] = {"skipped": f"{bench.seconds_left():.0f} s left before the deadline"}
            continue
        with run_folder() as folder:
            stepper = LoopStepper(loop_config([*argv, f"train.compile={mode}"]), folder)
            first = warm_up({"full": stepper.full}, bench.sizes.warmup, bench.device)["full"]
            rate = alternate(
                {"full": stepper.full}, bench.sizes.windows, bench.sizes.window_steps, bench.device
            )
        rows[mode] = {"first_step_seconds": first, "images_per_sec": rate["full"]["images_per_sec"]}
        print(
            f"  train.compile={mode:16s} first step {first:6.1f} s, "
            f"{rows[mode]['images_per_sec']:8.0f} img/s",
            flush=True,
        )
        torch._dynamo.reset()  # each mode compiles anew
    return {"command": command_text(argv), "modes": rows}


# The tests with CUDA variants (the `device` fixture's cuda case, and tests/test_gpu.py).
CUDA_TEST_FILES = ("tests/test_gpu.py", "tests/test_train.py", "tests/test_data.py",
                   "tests/test_task_contract.py", "tests/test_eval.py")  # fmt: skip
CUDA_TEST_SECONDS = 240  # at most, and never past the deadline


def cuda_tests_section(bench: Bench) -> dict:
    """The CUDA variants of the tests, in a child pytest bounded by the deadline: counts,
    and each failure's test and message. On a CPU they all skip (the plumbing still runs)."""
    # The compile section (the compiled-step target) comes next: leave it its time.
    room = bench.seconds_left() - EXPECTED_SECONDS["compile"] - 10
    limit = max(60.0, min(CUDA_TEST_SECONDS, room))
    report = WORK / "cuda_tests.xml"
    report.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-k",
            "cuda or test_gpu", f"--junitxml={report}", *CUDA_TEST_FILES]  # fmt: skip
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired as stopped:
        # No report is written when pytest is stopped: count the verdicts printed so far.
        row = {"error": f"the CUDA tests ran past {limit:.0f} s; counts are of those done",
               **verdicts_so_far(stopped.stdout or ""), "command": portable(argv)}  # fmt: skip
        print(f"  stopped after {limit:.0f} s: {row['passed']} passed, "
              f"{len(row['failed'])} failed, {row['skipped']} skipped", flush=True)  # fmt: skip
        return row
    if not report.is_file():
        return {"error": f"pytest wrote no report: {done.stdout[-1500:]}{done.stderr[-1500:]}"}
    row = {"command": portable(argv), "exit_code": done.returncode, **junit_counts(report)}
    print(
        f"  {row['passed']} passed, {len(row['failed'])} failed, {row['skipped']} skipped "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    for name, message in row["failed"].items():
        print(f"  FAILED {name}: {message}", flush=True)
    return row


def junit_counts(report: Path) -> dict:
    """Passed and skipped counts, and each failure's test and first line, of a JUnit XML."""
    import xml.etree.ElementTree as ET

    cases = list(ET.parse(report).getroot().iter("testcase"))
    failures = {}
    for case in cases:
        problem = case.find("failure")
        problem = case.find("error") if problem is None else problem
        if problem is not None:
            name = f"{case.get('classname')}::{case.get('name')}"
            failures[name] = (problem.get("message") or "").splitlines()[0][:300]
    skipped = sum(case.find("skipped") is not None for case in cases)
    return {"passed": len(cases) - skipped - len(failures), "skipped": skipped, "failed": failures}


def verdicts_so_far(output: str | bytes) -> dict:
    """Counts from `pytest -v` lines ("tests/x.py::test_y[z] PASSED [ 10%]") printed so far."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    found = re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.M)
    verdicts = dict(found)
    failed = {name: verdict for name, verdict in verdicts.items() if verdict in ("FAILED", "ERROR")}
    return {
        "passed": sum(v in ("PASSED", "XPASS") for v in verdicts.values()),
        "skipped": sum(v in ("SKIPPED", "XFAIL") for v in verdicts.values()),
        "failed": failed,
    }
