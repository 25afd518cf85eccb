"""overhead: per task, the full `selfsup train` step against the bare forward + backward +
optimizer step, and where the full step's time goes."""

from __future__ import annotations

from selfsup.config import dump

from .commands import command_text, loop_config, run_folder, task_argv
from .record import figures, portable, say
from .runner import Bench
from .stepper import PHASES, LoopStepper
from .timing import alternate, peak_memory_gib, utilisation, warm_up

# The figures a progress line shows of a timed task.
SHOWN = ("full_images_per_sec", "bare_images_per_sec", "overhead_pct", "matmul_share")


def measure_task(bench: Bench, argv: list[str]) -> dict:
    """Full against bare step of one command line, alternating; with --compile also both
    compiled; the share of the matmul rate once the hardware section has measured it."""
    cfg = loop_config(argv)
    with run_folder() as folder:
        stepper = LoopStepper(cfg, folder)
        flops = stepper.flops_per_image()
        contenders = {"full": stepper.full, "bare": stepper.bare}
        if bench.compile:
            compiled = stepper.compiled()
            contenders.update(full_compiled=compiled.full, bare_compiled=compiled.bare)
        first = warm_up(contenders, bench.sizes.warmup, bench.device)
        stepper.phase_seconds = dict.fromkeys(PHASES, 0.0)  # shares of the timed steps only
        rates = alternate(contenders, bench.sizes.windows, bench.sizes.window_steps, bench.device)
    full, bare = rates["full"]["images_per_sec"], rates["bare"]["images_per_sec"]
    row = {
        "command": command_text(argv),
        "batch": cfg.data.batch_size,
        "backbone": dump(cfg)["backbone"],
        "data_cache": stepper.run.data.streams[0].mode,
        "full_images_per_sec": full,
        "bare_images_per_sec": bare,
        "overhead_pct": round(100 * (1 - full / bare), 1),
        "full_phase_shares": stepper.phase_shares(),
        "train_flops_per_image": flops,
        "matmul_share": bench.peak_tflops and utilisation(flops, full, bench.peak_tflops),
        "prepare_seconds": stepper.prepare_seconds,
        "first_step_seconds": first,
        "peak_memory_gib": peak_memory_gib(bench.device),
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
        argv = [*task_argv(name, bench.data["cifar"], bench.sizes), *bench.extra]
        tasks[name] = row = measure_task(bench, argv)
        shown = (
            "overhead_pct",
            "full_phase_shares",
            "matmul_share",
            "compiled_full_images_per_sec",
        )
        say(f"  {name}: {figures(row, 'full_images_per_sec', 'bare_images_per_sec', *shown)}")
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
