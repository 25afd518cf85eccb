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

from . import stepper as st
from .overhead import SHOWN, measure_task
from .peer import decode_pil
from .record import CHILD_ENV, ROOT, WORK, figures, portable, say
from .runner import Bench

# Rough seconds each section of bench/gpu.py takes on an H200, to skip what would overrun
# the deadline.
EXPECTED_SECONDS = {
    "hardware": 5, "tasks": 90, "peer": 60, "counting_paper": 60, "demo": 60, "decode": 40,
    "cuda_tests": 60, "compile": 150,
}  # fmt: skip
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# The tests with CUDA variants (the `device` fixture's cuda case, and tests/test_gpu.py).
CUDA_TEST_FILES = ("tests/test_gpu.py", "tests/test_train.py", "tests/test_data.py",
                   "tests/test_task_contract.py", "tests/test_eval.py")  # fmt: skip
CUDA_TEST_SECONDS = 240  # at most, and never past the deadline


def loader_workers() -> int:
    """DataLoader workers on the GPU machine: every core but two (the loop's and the GPU's)."""
    return max(1, (os.cpu_count() or 2) - 2)


def counting_paper_section(bench: Bench) -> dict:
    """Counting at paper scale (the counting_alexnet_imagenet preset: 256 px images, 228 px
    crops, 114 px tiles, AlexNet) on Tiny ImageNet upscaled to 256 px."""
    base = ["counting", "--config", "counting_alexnet_imagenet"]
    workers = [f"data.workers={loader_workers()}"]
    argv = st.train_argv(base, bench.data["tiny"], bench.sizes.paper_batch, bench.extra or workers)
    row = measure_task(bench, argv)
    say(f"  counting at paper scale: {figures(row, *SHOWN, 'data_cache')}")
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
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=CHILD_ENV
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
    say(f"  selfsup demo: {figures(row, 'total_seconds', 'pretrain_seconds', 'probe_seconds')}")
    return row


def decode_section(bench: Bench) -> dict:
    """Streamed full-size JPEGs fitted to `decode_size` px: `data.decode=device` against PIL
    in DataLoader workers, images/s. The JPEGs are photographs as a user's image folder
    would hold them: Tiny ImageNet images upscaled to `jpeg_side`, one file each."""
    from PIL import Image

    from selfsup.data.throughput import decode_throughput

    sizes, workers, side = bench.sizes, loader_workers(), bench.sizes.jpeg_side
    source = decode_pil(bench.data["tiny"])
    images = [source[i % len(source)] for i in range(sizes.decode_images)]
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        for i, image in enumerate(images):
            image.resize(side, Image.Resampling.BICUBIC).save(f"{folder}/{i:05d}.jpg", quality=90)
        common = {"device": bench.device, "workers": workers, "batch_size": sizes.decode_batch}
        rates = {}
        for decode in ("cpu", "device"):  # PIL in DataLoader workers, or on the device
            rate = decode_throughput(
                Path(folder), sizes.decode_size, decode=decode, max_images=len(images), **common
            )
            rates[decode] = round(rate, 1)
    say(f"  {side} JPEGs to {sizes.decode_size} px, images/s by where they decode: {rates}")
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
    argv = [*st.task_argv(st.INFONCE, bench.data["cifar"], bench.sizes), *bench.extra]
    sizes = bench.sizes
    for mode in ("off", *COMPILE_MODES) if bench.device.type == "cuda" else ("off",):
        if mode == "max-autotune" and bench.seconds_left() < 240:
            rows[mode] = {"skipped": f"{bench.seconds_left():.0f} s left before the deadline"}
            continue
        with st.run_folder() as folder:
            stepper = st.LoopStepper(st.loop_config([*argv, f"train.compile={mode}"]), folder)
            first = stepper.warmed_up(sizes.warmup)
            rate = st.alternate({"": stepper.full}, sizes.windows, sizes.window_steps, bench.device)
        rows[mode] = {"first_step_seconds": first, "images_per_sec": rate[""]["images_per_sec"]}
        say(f"  train.compile={mode}: {figures(rows[mode], *rows[mode])}")
        torch._dynamo.reset()  # each mode compiles anew
    return {"command": st.command_text(argv), "modes": rows}


def cuda_tests_section(bench: Bench) -> dict:
    """The CUDA variants of the tests, in a child pytest bounded by the deadline: counts,
    and each failure's test and message, also of a run stopped at its bound. On a CPU they
    all skip (the plumbing still runs)."""
    # The compile section (the compiled-step target) comes next: leave it its time.
    room = bench.seconds_left() - EXPECTED_SECONDS["compile"] - 10
    limit = max(60.0, min(CUDA_TEST_SECONDS, room))
    argv = [sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider", "-k",
            "cuda or test_gpu", *CUDA_TEST_FILES]  # fmt: skip
    row: dict = {"command": portable(argv)}
    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=limit
        )
        row["exit_code"], output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as stopped:
        row["error"] = f"the CUDA tests ran past {limit:.0f} s; counts are of those done"
        output = stopped.stdout or ""
    row.update(pytest_verdicts(output))
    say(f"  {figures(row, 'passed', 'skipped', 'failed', 'error')}")
    return row


def pytest_verdicts(output: str | bytes) -> dict:
    """Passed and skipped counts and each failure's message from `pytest -v -rfE` output, also
    of a run stopped midway (verdict lines count; the summary, if reached, gives messages)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    found = re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.M)
    verdicts = dict(found)
    messages = dict(re.findall(r"^(?:FAILED|ERROR) (\S+::\S+)(?: - (.*))?$", text, re.M))
    return {
        "passed": sum(v in ("PASSED", "XPASS") for v in verdicts.values()),
        "skipped": sum(v in ("SKIPPED", "XFAIL") for v in verdicts.values()),
        "failed": {
            name: (messages.get(name) or verdict)[:300]
            for name, verdict in verdicts.items()
            if verdict in ("FAILED", "ERROR")
        },
    }
