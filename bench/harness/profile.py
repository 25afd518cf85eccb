"""profile: torch.profiler over full steps and over view building alone: the most expensive
operations, and the time and FLOP rate of every convolution shape."""

from __future__ import annotations

import torch

from .record import figures, portable, say
from .runner import Bench
from .stepper import INFONCE, LoopStepper, command_text, loop_config, run_folder, task_argv

PHASES = ("forward", "backward")


def top_operations(profile: torch.profiler.profile, steps: int, count: int = 12) -> list[dict]:
    """The operations with the most self CPU time, per step (our phase labels left out)."""
    averages = [e for e in profile.key_averages() if not e.key.startswith("perf/")]
    averages.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    return [
        {
            "op": e.key,
            "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 3),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls_per_step": round(e.count / steps, 1),
        }
        for e in averages[:count]
    ]


def conv_shape(image: list[int], weight: list[int], stride, padding, dilation, groups):
    """(label, forward FLOPs) of a 2-d convolution from its input and weight shapes."""
    batch, in_ch, height, width = image
    out_ch, in_per_group, kh, kw = weight
    oh = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    label = f"{in_ch}->{out_ch} {kh}x{kw}/{stride[0]} at {height}x{width}"
    if groups != 1:
        label += f" groups {groups}"
    return label, 2.0 * batch * out_ch * oh * ow * in_per_group * kh * kw


def conv_layers(profile: torch.profiler.profile, steps: int) -> list[dict]:
    """Time and arithmetic rate per step of every convolution shape, forward and backward
    (the backward computes the input gradient, the weight gradient or both), from a profile
    recorded with record_shapes. A rate far below the others' marks a shape the convolution
    library handles badly. CPU time: on a GPU it is launch time, not kernel time."""
    totals: dict[str, dict[str, list[float]]] = {}  # label -> phase -> [ms, flops]
    for event in profile.events():
        shapes, args = event.input_shapes, event.concrete_inputs
        if event.name == "aten::convolution" and len(shapes[1]) == 4 and not args[6]:
            label, flops = conv_shape(shapes[0], shapes[1], *args[3:6], args[8])
            phase = "forward"
        elif event.name == "aten::convolution_backward" and len(shapes[2]) == 4 and not args[7]:
            label, flops = conv_shape(shapes[1], shapes[2], *args[4:7], args[9])
            flops *= int(args[10][0]) + int(args[10][1])  # input grad, weight grad
            phase = "backward"
        else:
            continue
        row = totals.setdefault(label, {phase: [0.0, 0.0] for phase in PHASES})
        row[phase][0] += event.cpu_time_total / 1e3
        row[phase][1] += flops
    conv_ms = sum(ms for row in totals.values() for ms, _ in row.values()) or 1.0
    rows = [
        {
            "conv": label,
            **{f"{phase}_ms_per_step": round(row[phase][0] / steps, 2) for phase in PHASES},
            "share_of_conv_time": round(sum(ms for ms, _ in row.values()) / conv_ms, 4),
            **{
                f"{phase}_tflops": round(row[phase][1] / max(row[phase][0], 1e-9) / 1e9, 3)
                for phase in PHASES
            },
        }
        for label, row in totals.items()
    ]
    return sorted(rows, key=lambda r: r["share_of_conv_time"], reverse=True)


def profile_task(bench: Bench, name: str, argv: list[str]) -> dict:
    """torch.profiler over full steps, then over view building alone; the tables go to
    `figures/profile_<name>.txt`."""
    steps = bench.sizes.profile_steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with run_folder() as folder:
        stepper = LoopStepper(loop_config(argv), folder)
        stepper.warmed_up(bench.sizes.warmup)
        with torch.profiler.profile(activities=activities, record_shapes=True) as full:
            for _ in range(steps):
                stepper.full()
        with torch.profiler.profile(activities=activities) as views:
            for _ in range(steps):
                stepper.views_only()
    tables = bench.figures / f"profile_{name}.txt"
    tables.parent.mkdir(parents=True, exist_ok=True)
    tables.write_text(f"{command_text(argv)}\n\n" + "".join(
        f"== {what} ({steps} steps) ==\n"
        f"{profile.key_averages().table(sort_by='self_cpu_time_total', row_limit=30)}\n"
        for what, profile in (("full step", full), ("view building alone", views))
    ))  # fmt: skip
    row = {
        "command": command_text(argv),
        "steps": steps,
        "full_phase_shares": stepper.phase_shares(),
        "full_top_ops": top_operations(full, steps),
        "views_top_ops": top_operations(views, steps),
        "conv_layers": conv_layers(full, steps),
        "tables": portable([tables]),
    }
    say(f"  {name}: phase shares {row['full_phase_shares']}")
    for conv in row["conv_layers"][:6]:
        rates = figures(conv, "share_of_conv_time", "forward_tflops", "backward_tflops")
        say(f"    conv {conv['conv']}: {rates}")
    for op in row["views_top_ops"][:6]:
        say(f"    views: {op['op']}: {figures(op, 'self_ms_per_step', 'share')}")
    return row


def profile_section(bench: Bench) -> dict:
    # The InfoNCE step is the peer comparison's: where the time goes against LightlySSL.
    tasks = {
        name: profile_task(bench, name, task_argv(name, bench.data["cifar"], bench.sizes))
        for name in ("counting", "exemplar", INFONCE)
    }
    return {
        "what": "torch.profiler over full training steps and over view building alone; "
        "self CPU time per operation; per convolution shape, CPU time and FLOP rate forward "
        "and backward (conv_layers)",
        "tasks": tasks,
    }
