"""torch.distributed in a few functions that degrade to one process without a process group.

A run is distributed exactly when torchrun (or another launcher) set `RANK` and `WORLD_SIZE`;
otherwise everything here answers as rank 0 of 1 and no process group is created, so the same
code path trains in a plain `python` process.
"""

from __future__ import annotations

import datetime
import os
import re

import torch
import torch.distributed as torch_dist


def is_launched() -> bool:
    """True when a launcher asked for a multi-process run."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


# Seconds the process group waits for the other ranks (set by `init`; quoted in errors).
_timeout_s: float | None = None


def init(device: torch.device, timeout_s: float = 300.0) -> None:
    """Create the process group (NCCL on CUDA, gloo on CPU) when launched distributed."""
    global _timeout_s
    if not is_launched() or torch_dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    # A bounded timeout: if a rank dies or hangs, the others fail in collectives (and in the
    # start-up rendezvous) after `timeout_s` instead of waiting forever.
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    _timeout_s = timeout_s


# Words of gloo/NCCL/store errors that mean a peer is gone, not a bug on this rank.
_PEER_FAILURE_MARKERS = (
    "connection closed by peer",  # gloo: the peer process is gone
    "connection reset",
    "broken pipe",
    "timed out",  # gloo: "Timed out waiting 10000ms for recv operation to complete"
    "timeout",  # gloo: "Application timeout caused pair closure"; NCCL watchdog timeouts
)


def peer_lost_message(err: BaseException) -> str | None:
    """One line for a collective that failed because another rank crashed or stopped
    answering; None for any other error (or when not distributed)."""
    if not torch_dist.is_initialized():
        return None
    text = str(err)
    if not (
        isinstance(err, torch_dist.DistError)
        or any(marker in text.lower() for marker in _PEER_FAILURE_MARKERS)
    ):
        return None
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    # "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [...]. This is ..."
    cause = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0]
    # (A process group made elsewhere than `init` has a timeout this module does not know.)
    limit = f"train.dist_timeout={_timeout_s:g} s" if _timeout_s else "the process group's timeout"
    return (
        f"rank {rank()} of {world_size()}: another process of this distributed run crashed or "
        f"did not answer within {limit}; see its log for the cause ({cause})"
    )


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


def from_main(value):
    """Rank 0's `value` on every rank (itself in one process): one decision for all."""
    if not torch_dist.is_initialized():
        return value
    holder = [value]
    torch_dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity in one process)."""
    if not torch_dist.is_initialized():
        return value
    value = value.clone()
    torch_dist.all_reduce(value)
    return value / world_size()
