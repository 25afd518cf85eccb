"""How much work each benchmark does, as one table: a row per size, a column per profile.

- quick: tiny sizes that only check every section runs (CI, any CPU; the rates say little);
- cpu: bench/perf.py and bench/learning.py at full size on a CPU;
- gpu: bench/gpu.py on one GPU, the whole run within 9 minutes.

A script reads one profile: `PROFILES["quick"]` with --quick, else its own.
"""

from __future__ import annotations

from dataclasses import make_dataclass

PROFILE_NAMES = ("quick", "cpu", "gpu")

# size: (quick, cpu, gpu)  what it sizes
TABLE: dict[str, tuple] = {
    # Data and batches
    "train_images": (512, None, 25_000),  # CIFAR-10 training images used (None: all 50,000)
    "test_images": (256, None, None),  # learning: kNN test images (None: all 10,000)
    "batch": (8, None, 512),  # every task's batch (None: each config's own)
    "peer_batch": (8, 256, 512),  # the peer comparison's batch
    "paper_batch": (2, 256, 256),  # gpu: counting at paper scale
    # Timing: untimed steps, then alternating timed windows of steps
    "warmup": (1, 3, 5),
    "windows": (1, 4, 3),
    "window_steps": (1, 10, 20),
    "peer_window_steps": (1, 4, 10),  # the peer section's steps are long
    "peer_heaps": (("system", "reuse"), ("system", "reuse"), ("system",)),  # peer processes
    "matmul": (1024, 4096, 8192),  # side of the square matmuls
    "matmul_repeats": (2, 3, 10),
    "profile_steps": (2, 5, 5),
    # perf's scaling section
    "ddp_steps": (6, 60, 60),
    "ddp_log_every": (2, 10, 10),
    "eval_sizes": ((128, 256, 512), (1_000, 10_000, 50_000), (1_000, 10_000, 50_000)),
    "probe_test": (128, 1_000, 1_000),  # test images the probe is scored on
    "graph_sizes": ((1_000, 2_000, 4_000), (1_000, 10_000, 50_000), (1_000, 10_000, 50_000)),
    # gpu's decode section: streamed JPEGs fitted to `decode_size` px
    "decode_images": (16, 2_048, 2_048),
    "decode_size": (64, 224, 224),
    "decode_batch": (8, 256, 256),
    "jpeg_side": ((96, 72), (500, 375), (500, 375)),
    # learning: CPU seconds of training per contender
    "budget": (15.0, 600.0, 600.0),
}

Sizes = make_dataclass("Sizes", list(TABLE), frozen=True)
Sizes.__doc__ = "How much work each section does: one column of TABLE."

PROFILES = {
    name: Sizes(**{size: row[column] for size, row in TABLE.items()})
    for column, name in enumerate(PROFILE_NAMES)
}
