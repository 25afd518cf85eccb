"""Timing: untimed warm-up steps, alternating timed windows, training FLOPs and the matmul
rate they are set against."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads finished work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], int], steps: int, device: torch.device) -> tuple[int, float]:
    """Images of `steps` calls of `step` and their seconds, the device's queued work done."""
    synchronize(device)
    started = time.perf_counter()
    images = sum(step() for _ in range(steps))
    synchronize(device)
    return images, time.perf_counter() - started


def warm_up(
    contenders: dict[str, Callable[[], int]], steps: int, device: torch.device
) -> dict[str, float]:
    """Untimed steps of each contender; returns each one's first-step seconds (compilation,
    allocator and cache warm-up land there)."""
    first = {}
    for name, step in contenders.items():
        first[name] = round(timed(step, 1, device)[1], 3)
        timed(step, steps - 1, device)
    return first


def alternate(
    contenders: dict[str, Callable[[], int]], windows: int, steps: int, device: torch.device
) -> dict[str, dict]:
    """Images/s of each contender over `windows` timed windows of `steps` steps, taken in
    turn (A, B, A, B, ...): a slow spell of a shared machine hits all contenders alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(windows):
        for name, step in contenders.items():
            images, seconds = timed(step, steps, device)
            rates[name].append(images / seconds)
    return {
        name: {
            "images_per_sec": round(float(np.median(values)), 2),
            "windows": [round(v, 2) for v in values],
        }
        for name, values in rates.items()
    }


def training_flops(model: nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """FLOPs of one forward and backward pass (matmuls and convolutions, as counted by
    torch.utils.flop_counter), gradients cleared after."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        forward().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_tflops(side: int, dtype: torch.dtype, repeats: int, device: torch.device) -> dict:
    """Throughput of a square (side x side) @ (side x side) matmul: best and median run."""
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    out = torch.empty_like(a)

    def multiply() -> int:
        torch.mm(a, b, out=out)
        return 0

    multiply()  # warm-up: thread pool, packing buffers
    seconds = [timed(multiply, 1, device)[1] for _ in range(repeats)]
    flops = 2 * side**3
    return {
        "side": side,
        "best_tflops": round(flops / min(seconds) / 1e12, 4),
        "median_tflops": round(flops / float(np.median(seconds)) / 1e12, 4),
    }


def utilisation(flops_per_image: float, images_per_sec: float, peak_tflops: float) -> float:
    """The share of the matmul rate `peak_tflops` a step at `images_per_sec` uses."""
    return round(flops_per_image * images_per_sec / (peak_tflops * 1e12), 4)


def peak_memory_gib(device: torch.device) -> float | None:
    """The most GPU memory allocated since the last call (None on a CPU)."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 2)
