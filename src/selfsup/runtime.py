"""Device, precision and threading choices shared by training and evaluation."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

import torch

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> the local CUDA device when there is one (per LOCAL_RANK), else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda was asked for but no CUDA device is available")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles (Sapphire Rapids and later); recorded with benchmark
    figures (precision is measured, not decided from it)."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: full fp32).

    `auto`: on CUDA, bf16 where the GPU supports it, else fp16 (with a GradScaler). On a CPU
    no flag tells whether bf16 pays (it depends on the CPU and the workload): training
    measures it (`selfsup.precision`), and this answers fp32, exact, for everything else.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _glibc_mallopt():
    """glibc's mallopt, or None on other C libraries (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # Only glibc has gnu_get_libc_version (and honours these parameters; musl ignores them).
    return libc.mallopt if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Make the C heap keep the large blocks tensors free, for the next step to take again;
    True when it took hold.

    With glibc's defaults every block over 32 MB (most activations of a batch) is a fresh
    mmap that is unmapped when freed, so each training step page-faults its whole working set
    anew: about 1.3 million faults (5 GB) per step for a ResNet-18 at batch 512 and 32 px,
    some 20 % of the step's time on CPU. Serving them from the heap instead (no mmap, no
    trimming) makes those faults go away. The cost: the process keeps its peak memory until
    it exits. Only glibc (Linux) is tuned; elsewhere nothing changes and this returns False.
    Process-wide and not undone (glibc has no way back to its adaptive defaults).
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
