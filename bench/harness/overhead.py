"""overhead: per task, the full `selfsup train` step against the bare forward + backward +
optimizer step, and where the full step's time goes; hardware: the device, square matmul
throughput, and each timed step's training FLOPs per image as a fraction of that rate."""

from __future__ import annotations

import torch

from selfsup.config import dump
from selfsup.runtime import cpu_has_amx

from . import stepper as st
from .record import figures, portable, say
from .runner import Bench

# The figures a progress line shows of a timed task.
SHOWN = ("full_images_per_sec", "bare_images_per_sec", "overhead_pct", "matmul_share")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def measure_task(bench: Bench, argv: list[str]) -> dict:
    """Full against bare step of one command line, alternating; with --compile also both
    compiled; the share of the matmul rate once the hardware section has measured it."""
    cfg = st.loop_config(argv)
    with st.run_folder() as folder:
        stepper = st.LoopStepper(cfg, folder)
        flops = stepper.flops_per_image()
        contenders = {"full": stepper.full, "bare": stepper.bare}
        if bench.compile:
            compiled = stepper.compiled()
            contenders.update(full_compiled=compiled.full, bare_compiled=compiled.bare)
        sizes = bench.sizes
        first = st.warm_up(contenders, sizes.warmup, bench.device)
        stepper.phase_seconds = dict.fromkeys(st.PHASES, 0.0)  # shares of the timed steps only
        rates = st.alternate(contenders, sizes.windows, sizes.window_steps, bench.device)
    full, bare = rates["full"]["images_per_sec"], rates["bare"]["images_per_sec"]
    row = {
        "command": st.command_text(argv),
        "batch": cfg.data.batch_size,
        "backbone": dump(cfg)["backbone"],
        "data_cache": stepper.run.data.streams[0].mode,
        "full_images_per_sec": full,
        "bare_images_per_sec": bare,
        "overhead_pct": round(100 * (1 - full / bare), 1),
        "full_phase_shares": stepper.phase_shares(),
        "train_flops_per_image": flops,
        "matmul_share": bench.peak_tflops and st.utilisation(flops, full, bench.peak_tflops),
        "prepare_seconds": stepper.prepare_seconds,
        "first_step_seconds": first,
        "peak_memory_gib": st.peak_memory_gib(bench.device),
        "windows": {key: value["windows"] for key, value in rates.items()},
    }
    if bench.compile:
        row["compiled_full_images_per_sec"] = rates["full_compiled"]["images_per_sec"]
        row["compiled_bare_images_per_sec"] = rates["bare_compiled"]["images_per_sec"]
        row["compile_seconds"] = first["full_compiled"]  # the first compiled step compiles
    return row


def overhead_section(bench: Bench) -> dict:
    tasks = {}
    for name in bench.tasks:
        argv = [*st.task_argv(name, bench.data["cifar"], bench.sizes), *bench.extra]
        tasks[name] = row = measure_task(bench, argv)
        shown = (*SHOWN, "full_phase_shares", "compiled_full_images_per_sec")
        say(f"  {name}: {figures(row, *shown)}")
    return {
        "what": "images/s of the full `selfsup train` step (cached batch, views, forward, "
        "backward, optimizer step, logging) against the bare forward + backward + step on "
        "views built once; overhead_pct = 100 * (1 - full / bare)",
        "data": portable([bench.data["cifar"]]),
        "precision": bench.precision,
        "warmup_steps": bench.sizes.warmup,
        "windows": bench.sizes.windows,
        "window_steps": bench.sizes.window_steps,
        "tasks": tasks,
    }


def fractions(bench: Bench, peak: float) -> dict:
    """Training GFLOPs per image and the share of the matmul rate `peak` reached by the full
    and bare steps of the overhead and peer sections in the results so far."""
    steps = dict(bench.results.get("overhead", {}).get("tasks", {}))
    peer = bench.results.get("peer", {})
    for who, flops in peer.get("train_flops_per_image", {}).items():
        steps[f"peer_section_{who}"] = {
            "train_flops_per_image": flops,
            "full_images_per_sec": peer[f"{who}_full_images_per_sec"],
            "bare_images_per_sec": peer[f"{who}_bare_images_per_sec"],
        }
    out = {}
    for name, row in steps.items():
        flops = row["train_flops_per_image"]
        out[name] = {
            "train_gflops_per_image": round(flops / 1e9, 4),
            "full_fraction_of_matmul": st.utilisation(flops, row["full_images_per_sec"], peak),
            "bare_fraction_of_matmul": st.utilisation(flops, row["bare_images_per_sec"], peak),
        }
    return out


def hardware_section(bench: Bench) -> dict:
    names = ["fp32", "bf16", *(["fp16"] if bench.precision == "fp16" else [])]
    sizes = bench.sizes
    matmul = {
        name: st.matmul_tflops(sizes.matmul, DTYPES[name], sizes.matmul_repeats, bench.device)
        for name in names
    }
    device = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "cpu"
    say(f"  {device} matmul TFLOP/s at {sizes.matmul}^3: {figures(matmul, *names)}")
    bench.peak_tflops = matmul[bench.precision]["best_tflops"]
    tasks = fractions(bench, bench.peak_tflops)
    for name, row in tasks.items():
        say(f"  {name}: {figures(row, *row)} (of the {bench.precision} matmul rate)")
    return {
        "what": "training FLOPs per image (forward + backward, FlopCounterMode) x measured "
        "images/s, as a fraction of the best square-matmul rate in the training precision",
        "device": device,
        "torch": torch.__version__,
        "precision": bench.precision,
        "amx": cpu_has_amx(),
        "matmul": matmul,
        "images_per_sec_from": "the overhead and peer sections of this results file",
        "tasks": tasks,
    }
