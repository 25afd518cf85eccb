"""overhead: per task, the full `selfsup train` step against the bare forward + backward +
optimizer step, and where the full step's time goes."""

from __future__ import annotations

from selfsup.config import dump

from .commands import command_text, loop_config, run_folder, task_argv
from .record import portable
from .runner import Bench
from .stepper import PHASES, LoopStepper
from .timing import alternate, peak_memory_gib, utilisation, warm_up


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


def report(name: str, row: dict) -> str:
    shares, share = row["full_phase_shares"], row["matmul_share"]
    line = (
        f"  {name:26s} full {row['full_images_per_sec']:9.1f} img/s   bare "
        f"{row['bare_images_per_sec']:9.1f} img/s   overhead {row['overhead_pct']:5.1f} %"
    )
    if shares:
        line += f"   (data {100 * shares['data']:.1f} %, views {100 * shares['views']:.1f} %)"
    if share is not None:
        line += f"   matmul share {100 * share:.1f} %"
    if "compile_seconds" in row:
        line += (
            f"   compiled full {row['compiled_full_images_per_sec']:.1f} img/s "
            f"(compile {row['compile_seconds']:.0f} s)"
        )
    return line


def overhead_section(bench: Bench) -> dict:
    tasks = {}
    for name in bench.tasks:
        argv = [*task_argv(name, bench.data["cifar"], bench.sizes), *bench.extra]
        tasks[name] = measure_task(bench, argv)
        print(report(name, tasks[name]), flush=True)
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
