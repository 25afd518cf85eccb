"""overhead: per pretext task, the full `selfsup train` step against the bare forward +
backward + optimizer step, and where the full step's time goes."""

from __future__ import annotations

from run import portable

from selfsup.config import dump

from .common import (
    TASKS,
    Bench,
    alternate,
    cifar,
    command_text,
    loop_config,
    run_folder,
    subset_npz,
    train_argv,
    warm_up,
)
from .stepper import PHASES, LoopStepper, phase_shares


def measure_task(bench: Bench, argv: list[str]) -> dict:
    """Full against bare step of one task, alternating; with --compile also compiled."""
    cfg = loop_config(argv)
    with run_folder() as folder:
        stepper = LoopStepper(cfg, folder)
        flops = stepper.flops_per_image()
        contenders = {"full": stepper.full, "bare": stepper.bare}
        if bench.args.compile:
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
        "full_images_per_sec": full,
        "bare_images_per_sec": bare,
        "overhead_pct": round(100 * (1 - full / bare), 1),
        "full_phase_shares": phase_shares(stepper.phase_seconds),
        "train_flops_per_image": flops,
        "prepare_seconds": stepper.prepare_seconds,
        "first_step_seconds": first,
        "windows": {key: value["windows"] for key, value in rates.items()},
    }
    if bench.args.compile:
        row["compiled_full_images_per_sec"] = rates["full_compiled"]["images_per_sec"]
        row["compiled_bare_images_per_sec"] = rates["bare_compiled"]["images_per_sec"]
        row["compile_seconds"] = first["full_compiled"]  # the first compiled step compiles
    return row


def overhead_section(bench: Bench) -> dict:
    data = subset_npz(cifar("train"), bench.sizes.train_images)
    tasks = {}
    for name, base in TASKS.items():
        if bench.args.tasks and name not in bench.args.tasks:
            continue
        argv = train_argv(base, data, bench.sizes.batch, [])
        tasks[name] = row = measure_task(bench, argv)
        shares = row["full_phase_shares"]
        line = (
            f"  {name:18s} full {row['full_images_per_sec']:8.1f} img/s   bare "
            f"{row['bare_images_per_sec']:8.1f} img/s   overhead {row['overhead_pct']:5.1f} %   "
            f"(data {100 * shares['data']:.1f} %, views {100 * shares['views']:.1f} %)"
        )
        if bench.args.compile:
            line += (
                f"   compiled full {row['compiled_full_images_per_sec']:.1f} img/s "
                f"(compile {row['compile_seconds']:.0f} s)"
            )
        print(line, flush=True)
    return {
        "what": "images/s of the full `selfsup train` step (cached batch, views, forward, "
        "backward, optimizer step, logging) against the bare forward + backward + step on "
        "views built once; overhead_pct = 100 * (1 - full / bare)",
        "data": portable([data]),
        "precision": bench.precision,
        "warmup_steps": bench.sizes.warmup,
        "windows": bench.sizes.windows,
        "window_steps": bench.sizes.window_steps,
        "tasks": tasks,
    }
