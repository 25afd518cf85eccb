"""torch.distributed in a few functions that degrade to one process without a process group.

A run is distributed exactly when torchrun (or another launcher) set `RANK` and `WORLD_SIZE`;
otherwise everything here answers as rank 0 of 1 and no process group is created, so the same
code path trains in a plain `python` process.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as torch_dist


def is_launched() -> bool:
    """True when a launcher asked for a multi-process run."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device, timeout_minutes: float = 10.0) -> None:
    """Create the process group (NCCL on CUDA, gloo on CPU) when launched distributed."""
    if not is_launched() or torch_dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    # A bounded timeout: if a rank dies, the others fail in collectives instead of hanging.
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity in one process)."""
    if not torch_dist.is_initialized():
        return value
    value = value.clone()
    torch_dist.all_reduce(value)
    return value / world_size()
