"""The GPU benchmark: one prepared script that measures selfsup on one GPU within 9 minutes,
its own set-up included, and runs on a CPU with --quick (so CI runs every line of it).

    python bench/gpu.py --prepare      # once, where the data is: inputs -> bench/work/gpu_inputs
    python bench/gpu.py                # on the GPU machine -> bench/results/gpu.json
    python bench/gpu.py --quick        # tiny sizes, no demo, on any machine -> bench/work
    python bench/gpu.py --only tasks peer

`--prepare` writes everything the run needs besides the repository into bench/work/gpu_inputs
(git-ignored, about 45 MiB: a 25,000-image CIFAR-10 subset, Tiny ImageNet's training images,
the LightlySSL wheel), so that repository and inputs travel together in 64 MiB to a machine
that has PyTorch but no network. There the script needs no install step: it puts `src/` and
the carried wheel on its own import path. With `--out DIR` (e.g. `--out "$OUT"`) it also
writes the JSON and the log packed in DIR/gpu_results.tar.gz.

Sections, in the order they run; one that would end past `--deadline` (default 510 s after
start) is skipped and says so, so the whole run fits its 9 minutes:
- hardware: the device, torch, and the measured matmul rate (bf16 on a GPU, fp32 on a CPU).
- tasks: per task, images/s of the full `selfsup train` step (batch from the data cache,
  views, forward, backward, optimizer step, metric window) against the bare step (forward,
  backward and optimizer step on views built once), alternating timed windows; overhead =
  1 - full / bare; training FLOPs per image and the share of the matmul rate they reach.
- peer: LightlySSL's SimCLR as its CIFAR-10 benchmark writes it (PIL SimCLRTransform,
  torch DataLoader with cores - 2 workers, torchvision CIFAR ResNet-18) against our exemplar
  task with InfoNCE (pre-activation ResNet-18, small stem), same batch and precision.
- counting_paper: counting at paper scale (the counting_alexnet_imagenet preset: 256 px
  images, 228 px crops, 114 px tiles, AlexNet, batch 256) on Tiny ImageNet upscaled to 256 px.
- demo: `selfsup demo` end to end as a user runs it: pretraining and probe phases, in seconds.
- decode: streamed full-size JPEGs fitted to 224 px: `data.decode=device` against PIL in
  DataLoader workers (cores - 2), images/s.
- cuda_tests: the CUDA variants of the tests (tests/test_gpu.py and the `device` fixture's
  cuda cases of the loop, data, task and evaluation tests): passed, skipped, each failure.
- compile: the InfoNCE ResNet-18 step under each `train.compile` mode: the first step's
  seconds (compiling) and the steady images/s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))  # runs from a plain checkout, nothing installed
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402
from perfkit.common import (  # noqa: E402
    TASKS,
    alternate,
    command_text,
    loop_config,
    run_folder,
    subset_npz,
    synchronize,
    train_argv,
    warm_up,
)
from perfkit.hardware import matmul_tflops, utilisation  # noqa: E402
from perfkit.peer import PeerSimCLR, decode_pil, exemplar_argv  # noqa: E402
from perfkit.stepper import LoopStepper  # noqa: E402
from run import RESULTS, ROOT, WORK, data_dir, machine, portable  # noqa: E402

from selfsup import train as loop  # noqa: E402
from selfsup.data.streams import batch_items  # noqa: E402
from selfsup.outputs import written_atomically  # noqa: E402
from selfsup.runtime import resolve_device, resolve_precision  # noqa: E402

SECTIONS = (
    "hardware",
    "tasks",
    "peer",
    "counting_paper",
    "demo",
    "decode",
    "cuda_tests",
    "compile",
)
INPUTS = WORK / "gpu_inputs"
CIFAR_SUBSET = 25_000  # training images carried (the whole 50,000 would leave no room)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
ASSETS = ROOT / "src" / "selfsup" / "assets"


class Sizes(SimpleNamespace):
    """How much work each section does: FULL on a GPU, QUICK on a CPU in CI."""


FULL = Sizes(
    batch=512, peer_batch=512, paper_batch=256, warmup=5, windows=3, window_steps=20,
    peer_window_steps=10, matmul=8192, matmul_repeats=10,
    decode_images=2_048, decode_size=224, decode_batch=256, jpeg_side=(500, 375),
)  # fmt: skip
QUICK = Sizes(
    batch=8, peer_batch=8, paper_batch=2, warmup=1, windows=1, window_steps=1,
    peer_window_steps=1, matmul=1024, matmul_repeats=2, decode_images=16,
    decode_size=64, decode_batch=8, jpeg_side=(96, 72),
)  # fmt: skip
# With --quick (CI, 2 CPU cores) every section but the demo runs once, on the two tasks that
# cover both backbones; compiling on a CPU takes minutes, so the compile section times eager
# only, and the demo's probes alone take minutes there (tests/test_demo.py runs the demo).
QUICK_TASKS = ("counting", "exemplar-infonce-resnet18")


# ---------------------------------------------------------------------------------------------
# Inputs: prepared where the data is, carried to the GPU machine
# ---------------------------------------------------------------------------------------------


def prepare_inputs() -> None:
    """Data subsets and the peer's wheel -> INPUTS (run where the data and PyPI are)."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    cifar = subset_npz(data_dir() / "cifar10" / "train_jpeg.npz", CIFAR_SUBSET)
    (INPUTS / "cifar10_train.npz").write_bytes(cifar.read_bytes())
    tiny = data_dir() / "tinyimagenet" / "train_jpeg.npz"
    (INPUTS / "tinyimagenet_train.npz").write_bytes(tiny.read_bytes())
    wheels = INPUTS / "wheels"
    wheels.mkdir(exist_ok=True)
    # lightly's loss, heads and transforms import nothing beyond torch, torchvision and PIL.
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*download, "-d", str(wheels), "lightly==1.6.0"], check=True)
    size = sum(p.stat().st_size for p in INPUTS.rglob("*") if p.is_file()) / 2**20
    print(f"inputs: {portable([INPUTS])} ({size:.1f} MiB)")


def use_carried_wheels() -> None:
    """Put carried pure-Python wheels on the import path (a wheel is a zip archive)."""
    sys.path.extend(str(w) for w in sorted((INPUTS / "wheels").glob("*-py3-none-any.whl")))


def inputs(quick: bool) -> dict[str, Path]:
    """The data each section reads: the bundled CIFAR-10 sample with --quick (nothing else
    needed), else the prepared inputs, else the shared data folder."""
    if quick:
        sample = ASSETS / "cifar10_sample_train.npz"
        return {"cifar": subset_npz(sample, 512), "tiny": subset_npz(sample, 64)}
    if (INPUTS / "cifar10_train.npz").is_file():
        return {"cifar": INPUTS / "cifar10_train.npz", "tiny": INPUTS / "tinyimagenet_train.npz"}
    cifar = data_dir() / "cifar10" / "train_jpeg.npz"
    if not cifar.is_file():
        sys.exit(f"no inputs: run `python bench/gpu.py --prepare` where {cifar} exists")
    return {
        "cifar": subset_npz(cifar, CIFAR_SUBSET),
        "tiny": data_dir() / "tinyimagenet" / "train_jpeg.npz",
    }


# ---------------------------------------------------------------------------------------------
# Stepping the loop as `selfsup train` does
# ---------------------------------------------------------------------------------------------


class Stepper(LoopStepper):
    """perfkit's LoopStepper with the full step as the loop runs it on a GPU: no wait for the
    device between phases, one read of the metric window every `train.log_every` steps."""

    def full(self) -> int:
        self.step, fields = next(self.batches)
        views = loop.step_views(self.run, self.step, fields)
        out = loop.optimize(self.run, self.trained, views, self.step, self.scaler, self.amp_dtype)
        self.window.add(out, self.step)
        if (self.step + 1) % self.run.cfg.train.log_every == 0:
            self.window.read()
        return batch_items(fields)


def measure_step(ctx: SimpleNamespace, argv: list[str]) -> dict:
    """Full against bare step of one `selfsup train` command line, alternating windows."""
    cfg = loop_config(argv)
    with run_folder() as folder:
        stepper = Stepper(cfg, folder)
        flops = stepper.flops_per_image()
        contenders = {"full": stepper.full, "bare": stepper.bare}
        first = warm_up(contenders, ctx.sizes.warmup, ctx.device)
        rates = alternate(contenders, ctx.sizes.windows, ctx.sizes.window_steps, ctx.device)
        cache = stepper.run.data.streams[0].mode
        peak = peak_memory_gib(ctx.device)
    full, bare = rates["full"]["images_per_sec"], rates["bare"]["images_per_sec"]
    return {
        "command": command_text(argv),
        "batch": cfg.data.batch_size,
        "data_cache": cache,
        "full_images_per_sec": full,
        "bare_images_per_sec": bare,
        "overhead_pct": round(100 * (1 - full / bare), 1),
        "train_flops_per_image": flops,
        "matmul_share": utilisation(flops, full, ctx.peak_tflops),
        "first_step_seconds": first["full"],
        "peak_memory_gib": peak,
        "windows": {name: value["windows"] for name, value in rates.items()},
    }


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 2)


def infonce_argv(ctx: SimpleNamespace) -> list[str]:
    return exemplar_argv(ctx.data["cifar"], ctx.sizes.peer_batch)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def hardware_section(ctx: SimpleNamespace) -> dict:
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    rate = matmul_tflops(ctx.sizes.matmul, dtype, ctx.sizes.matmul_repeats, ctx.device)
    ctx.peak_tflops = rate["median_tflops"]
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu"
    print(f"  {name}: {rate['median_tflops']:.3g} TFLOP/s matmul ({dtype})", flush=True)
    return {"device": name, "matmul_dtype": str(dtype), "matmul": rate, "torch": torch.__version__}


def tasks_section(ctx: SimpleNamespace) -> dict:
    rows = {}
    argvs = {
        name: train_argv(base, ctx.data["cifar"], ctx.sizes.batch, [])
        for name, base in TASKS.items()
    }
    argvs["exemplar-infonce-resnet18"] = infonce_argv(ctx)
    for name, argv in argvs.items():
        if ctx.quick and name not in QUICK_TASKS:
            continue
        argv = [*argv, *ctx.extra]
        rows[name] = row = measure_step(ctx, argv)
        print(
            f"  {name:26s} full {row['full_images_per_sec']:9.0f} img/s  bare "
            f"{row['bare_images_per_sec']:9.0f} img/s  overhead {row['overhead_pct']:5.1f} %  "
            f"matmul share {100 * row['matmul_share']:.1f} %",
            flush=True,
        )
    return {"precision": ctx.precision, "tasks": rows}


def peer_section(ctx: SimpleNamespace) -> dict:
    try:
        import lightly
    except ImportError:
        return {"skipped": "LightlySSL is not importable (bench/gpu.py --prepare carries it)"}
    workers = max(0, (os.cpu_count() or 2) - 2) if not ctx.quick else 0
    batch = ctx.sizes.peer_batch
    argv = [*infonce_argv(ctx), *ctx.extra]
    with run_folder() as folder:
        ours = Stepper(loop_config(argv), folder)
        bench = SimpleNamespace(device=ctx.device, amp_dtype=ctx.amp_dtype)
        peer = PeerSimCLR(decode_pil(ctx.data["cifar"]), batch, workers, bench)
        contenders = {"ours_full": ours.full, "peer_full": peer.full, "peer_bare": peer.bare}
        warm_up(contenders, ctx.sizes.warmup, ctx.device)
        steps = ctx.sizes.peer_window_steps
        rates = alternate(contenders, ctx.sizes.windows, steps, ctx.device)
        peer.close()
    speed = {name: value["images_per_sec"] for name, value in rates.items()}
    print(
        f"  ours {speed['ours_full']:.0f} pairs/s, LightlySSL {speed['peer_full']:.0f} pairs/s "
        f"(its bare step {speed['peer_bare']:.0f}): {speed['ours_full'] / speed['peer_full']:.2f}x",
        flush=True,
    )
    return {
        "lightly": lightly.__version__,
        "peer_workers": workers,
        "batch": batch,
        "ours_command": command_text(argv),
        **{f"{name}_pairs_per_sec": value for name, value in speed.items()},
        "ratio_ours_over_peer": round(speed["ours_full"] / speed["peer_full"], 3),
        "windows": {name: value["windows"] for name, value in rates.items()},
    }


def counting_paper_section(ctx: SimpleNamespace) -> dict:
    base = ["counting", "--config", "counting_alexnet_imagenet"]
    workers = ["data.workers=" + str(max(1, (os.cpu_count() or 2) - 2))]
    argv = train_argv(base, ctx.data["tiny"], ctx.sizes.paper_batch, ctx.extra or workers)
    row = measure_step(ctx, argv)
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


def demo_child(folder: Path, clock: PhaseClock) -> None:
    """`selfsup demo` in a child process, exactly as a user runs it."""
    argv = [sys.executable, "-m", "selfsup", "demo", "--out", str(folder / "demo")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as child:
        for line in child.stdout:
            clock.see(line)
    if child.returncode != 0:
        raise RuntimeError("selfsup demo failed:\n" + "\n".join(clock.tail))


def demo_section(ctx: SimpleNamespace) -> dict:
    """`selfsup demo` end to end, its two phases timed from the moment each phase's header
    line appears."""
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        clock = PhaseClock()
        demo_child(Path(folder), clock)
        total = time.perf_counter() - clock.started
    if set(clock.marks) != {"1", "2"}:
        raise RuntimeError("selfsup demo printed no phase headers:\n" + "\n".join(clock.tail))
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


def decode_section(ctx: SimpleNamespace) -> dict:
    from selfsup.data.throughput import decode_throughput

    sizes = ctx.sizes
    workers = max(1, (os.cpu_count() or 2) - 2)
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        images = write_jpegs(ctx.data["tiny"], Path(folder), sizes.decode_images, sizes.jpeg_side)
        common = {
            "device": ctx.device,
            "workers": workers,
            "batch_size": sizes.decode_batch,
            "max_images": sizes.decode_images,
        }
        rates = {
            decode: round(decode_throughput(images, sizes.decode_size, decode=decode, **common), 1)
            for decode in ("cpu", "device")
        }
    print(
        f"  JPEG {sizes.jpeg_side[0]}x{sizes.jpeg_side[1]} -> {sizes.decode_size} px: PIL in "
        f"{workers} workers {rates['cpu']:.0f} img/s, on {ctx.device.type} "
        f"{rates['device']:.0f} img/s",
        flush=True,
    )
    return {
        "images": f"{sizes.decode_images} JPEGs of {sizes.jpeg_side[0]}x{sizes.jpeg_side[1]} "
        "(Tiny ImageNet upscaled, quality 90)",
        "size": sizes.decode_size,
        "workers": workers,
        "pil_workers_images_per_sec": rates["cpu"],
        "device_decode_images_per_sec": rates["device"],
    }


def compile_section(ctx: SimpleNamespace) -> dict:
    """Each train.compile mode on the InfoNCE step: first-step seconds and steady images/s.
    max-autotune, the slowest to compile, goes last, and only while the deadline allows."""
    rows = {}
    modes = ("off",) if ctx.quick else ("off", *COMPILE_MODES)
    for mode in modes:
        if mode == "max-autotune" and ctx.seconds_left() < 240:
            rows[mode] = {"skipped": f"{ctx.seconds_left():.0f} s left before the deadline"}
            continue
        argv = [*infonce_argv(ctx), *ctx.extra, f"train.compile={mode}"]
        with run_folder() as folder:
            stepper = Stepper(loop_config(argv), folder)
            first = warm_up({"full": stepper.full}, ctx.sizes.warmup, ctx.device)["full"]
            rate = alternate(
                {"full": stepper.full}, ctx.sizes.windows, ctx.sizes.window_steps, ctx.device
            )
        rows[mode] = {"first_step_seconds": first, "images_per_sec": rate["full"]["images_per_sec"]}
        print(
            f"  train.compile={mode:16s} first step {first:6.1f} s, "
            f"{rows[mode]['images_per_sec']:8.0f} img/s",
            flush=True,
        )
        torch._dynamo.reset()  # each mode compiles anew
    return {"command": command_text(infonce_argv(ctx)), "modes": rows}


# The tests with CUDA variants (the `device` fixture's cuda case, and tests/test_gpu.py).
CUDA_TEST_FILES = ("tests/test_gpu.py", "tests/test_train.py", "tests/test_data.py",
                   "tests/test_task_contract.py", "tests/test_eval.py")  # fmt: skip
CUDA_TEST_SECONDS = 240  # at most, and never past the deadline


def cuda_tests_section(ctx: SimpleNamespace) -> dict:
    """The CUDA variants of the tests, in a child pytest bounded by the deadline: counts,
    and each failure's test and message. On a CPU they all skip (the plumbing still runs)."""
    import xml.etree.ElementTree as ET

    # The compile section (the compiled-step target) comes next: leave it its time.
    room = ctx.seconds_left() - EXPECTED_SECONDS["compile"] - 10
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
    cases = list(ET.parse(report).getroot().iter("testcase"))
    failures = {}
    for case in cases:
        problem = case.find("failure")
        problem = case.find("error") if problem is None else problem
        if problem is not None:
            name = f"{case.get('classname')}::{case.get('name')}"
            failures[name] = (problem.get("message") or "").splitlines()[0][:300]
    skipped = sum(case.find("skipped") is not None for case in cases)
    row = {
        "command": portable(argv),
        "exit_code": done.returncode,
        "passed": len(cases) - skipped - len(failures),
        "skipped": skipped,
        "failed": failures,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"  {row['passed']} passed, {len(failures)} failed, {skipped} skipped "
        f"({row['seconds']:.0f} s)",
        flush=True,
    )
    for name, message in failures.items():
        print(f"  FAILED {name}: {message}", flush=True)
    return row


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


RUNNERS: dict[str, Callable[[SimpleNamespace], dict]] = {
    "hardware": hardware_section,
    "tasks": tasks_section,
    "peer": peer_section,
    "counting_paper": counting_paper_section,
    "demo": demo_section,
    "decode": decode_section,
    "cuda_tests": cuda_tests_section,
    "compile": compile_section,
}


# Rough seconds each section takes on an H200, to skip what would overrun the deadline.
EXPECTED_SECONDS = {
    "hardware": 5, "tasks": 90, "peer": 60, "counting_paper": 60, "demo": 60, "decode": 40,
    "cuda_tests": 60, "compile": 150,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="write bench/work/gpu_inputs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU, CI)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections")
    parser.add_argument(
        "--deadline",
        type=float,
        default=510.0,
        help="seconds after start to stop starting sections",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--out", type=Path, help="also pack the results and log in OUT")
    parser.add_argument("--results", type=Path, help="results JSON (default by mode)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.prepare:
        prepare_inputs()
        return
    use_carried_wheels()
    WORK.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    amp_dtype = resolve_precision("auto", device)
    ctx = SimpleNamespace(
        quick=args.quick,
        sizes=QUICK if args.quick else FULL,
        device=device,
        amp_dtype=amp_dtype,
        precision={None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype],
        data=inputs(args.quick),
        peak_tflops=None,
        # Quick runs decode their few images in the main process: worker start-up would
        # dominate them.
        extra=["data.workers=0"] if args.quick else [],
        seconds_left=lambda: args.deadline - (time.perf_counter() - started),
    )
    default = WORK / "gpu_quick.json" if args.quick else RESULTS / "gpu.json"
    path = args.results or default
    results = {"machine": machine(), "device": str(device), "date": time.strftime("%Y-%m-%d")}
    if args.only and path.is_file():  # the sections of an earlier run stay
        earlier = json.loads(path.read_text())
        if earlier.get("device") == results["device"]:
            results = {**earlier, **results}
            print(f"--only: the other sections of {portable([path])} are kept")
    log = io.StringIO()
    default_sections = [n for n in SECTIONS if not (args.quick and n == "demo")]
    for name in args.only or default_sections:
        if name != "hardware" and ctx.peak_tflops is None:
            results["hardware"] = run_section("hardware", ctx, log)
        expected = 0 if args.quick else EXPECTED_SECONDS[name]
        if ctx.seconds_left() < expected:
            results[name] = {"skipped": f"{ctx.seconds_left():.0f} s left before the deadline"}
            print(f"[{name}] skipped: {results[name]['skipped']}", flush=True)
        else:
            results[name] = run_section(name, ctx, log)
        # Saved after every section: a run stopped from outside keeps what it measured.
        results["seconds"] = round(time.perf_counter() - started, 1)
        save(results, path, log, args.out)
    print(f"results: {portable([path])} ({results['seconds']:.0f} s)")


def save(results: dict, path: Path, log: io.StringIO, out: Path | None) -> None:
    """The results file, written atomically, and with --out the archive of it and the log."""
    with written_atomically(path) as temporary:
        temporary.write_text(json.dumps(results, indent=2) + "\n")
    if out:
        pack(out, path, log.getvalue())


def run_section(name: str, ctx: SimpleNamespace, log: io.StringIO) -> dict:
    """One section; a failure is recorded with its message and the others still run."""
    print(f"[{name}]", flush=True)
    section_started = time.perf_counter()
    try:
        row = RUNNERS[name](ctx)
    except Exception as error:  # one broken section must not cost the others' device time
        row = {"error": f"{type(error).__name__}: {error}"}
        print(f"  failed: {row['error']}", flush=True)
    row["section_seconds"] = round(time.perf_counter() - section_started, 1)
    log.write(f"{name}: {json.dumps(row)}\n")
    synchronize(ctx.device)
    return row


def pack(out: Path, results: Path, log: str) -> None:
    """Results and log in one archive (the GPU machine sends back a few files only)."""
    out.mkdir(parents=True, exist_ok=True)
    # Both replaced whole (rewritten after every section: a stop mid-write keeps the last).
    archive_path = out / "gpu_results.tar.gz"
    with written_atomically(archive_path) as packing, tarfile.open(packing, "w:gz") as archive:
        archive.add(results, arcname=results.name)
        data = log.encode()
        info = tarfile.TarInfo("gpu_log.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with written_atomically(out / results.name) as copying:
        copying.write_text(results.read_text())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
