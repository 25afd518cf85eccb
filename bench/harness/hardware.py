"""hardware: the device, square matmul throughput, and each timed step's training FLOPs per
image as a fraction of that rate."""

from __future__ import annotations

import torch

from selfsup.runtime import cpu_has_amx

from .record import figures, say
from .runner import Bench
from .timing import matmul_tflops, utilisation

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
            "full_fraction_of_matmul": utilisation(flops, row["full_images_per_sec"], peak),
            "bare_fraction_of_matmul": utilisation(flops, row["bare_images_per_sec"], peak),
        }
    return out


def hardware_section(bench: Bench) -> dict:
    names = ["fp32", "bf16", *(["fp16"] if bench.precision == "fp16" else [])]
    sizes = bench.sizes
    matmul = {
        name: matmul_tflops(sizes.matmul, DTYPES[name], sizes.matmul_repeats, bench.device)
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
