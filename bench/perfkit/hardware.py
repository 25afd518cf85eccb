"""hardware: square matmul throughput and each task's training FLOPs per image, so that
measured images/s become a fraction of what the cores can do."""

from __future__ import annotations

import time

import numpy as np
import torch

from selfsup.runtime import cpu_has_amx

from .common import Bench, synchronize
from .overhead import overhead_section


def matmul_tflops(side: int, dtype: torch.dtype, repeats: int, device: torch.device) -> dict:
    """Throughput of a square (side x side) @ (side x side) matmul: best and median run."""
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    out = torch.empty_like(a)
    torch.mm(a, b, out=out)  # warm-up: thread pool, packing buffers
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    flops = 2 * side**3
    return {
        "side": side,
        "best_tflops": round(flops / min(seconds) / 1e12, 4),
        "median_tflops": round(flops / float(np.median(seconds)) / 1e12, 4),
    }


def utilisation(flops_per_image: float, images_per_sec: float, peak_tflops: float) -> float:
    return round(flops_per_image * images_per_sec / (peak_tflops * 1e12), 4)


def hardware_section(bench: Bench) -> dict:
    sizes = bench.sizes
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if bench.precision == "fp16":
        dtypes["fp16"] = torch.float16
    matmul = {
        name: matmul_tflops(sizes.matmul, dtype, sizes.matmul_repeats, bench.device)
        for name, dtype in dtypes.items()
    }
    for name, row in matmul.items():
        print(f"  matmul {name} {row['side']}^3: {row['best_tflops']:.3f} TFLOP/s", flush=True)
    peak = matmul[bench.precision]["best_tflops"]
    overhead = bench.done.get("overhead") or overhead_section(bench)
    tasks = {}
    for name, row in overhead["tasks"].items():
        flops = row["train_flops_per_image"]
        tasks[name] = {
            "train_gflops_per_image": round(flops / 1e9, 4),
            "full_fraction_of_matmul": utilisation(flops, row["full_images_per_sec"], peak),
            "bare_fraction_of_matmul": utilisation(flops, row["bare_images_per_sec"], peak),
        }
    peer = bench.done.get("peer", {})
    if "train_flops_per_image" in peer:
        for who in ("ours", "peer"):
            flops = peer["train_flops_per_image"][who]
            tasks[f"peer_section_{who}"] = {
                "train_gflops_per_image": round(flops / 1e9, 4),
                "full_fraction_of_matmul": utilisation(
                    flops, peer[f"{who}_full_images_per_sec"], peak
                ),
                "bare_fraction_of_matmul": utilisation(
                    flops, peer[f"{who}_bare_images_per_sec"], peak
                ),
            }
    for name, row in tasks.items():
        print(
            f"  {name:22s} {row['train_gflops_per_image']:7.3f} GFLOP/img  "
            f"{100 * row['full_fraction_of_matmul']:5.1f} % of the {bench.precision} matmul rate "
            f"(bare {100 * row['bare_fraction_of_matmul']:.1f} %)",
            flush=True,
        )
    return {
        "what": "training FLOPs per image (forward + backward, FlopCounterMode) x measured "
        "images/s, as a fraction of the best square-matmul rate in the training precision",
        "precision": bench.precision,
        "amx": cpu_has_amx(),
        "matmul": matmul,
        "images_per_sec_from": "this run's overhead and peer sections",
        "tasks": tasks,
    }
