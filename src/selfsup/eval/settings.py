"""What the classification evaluations measure with: their settings, kept apart from the code
that runs them so the command line can show the defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProbeSettings:
    # L2 strengths tried on the validation split (loss = mean CE + wd/2 * |W|^2); one value
    # skips the selection.
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    val_fraction: float = 0.1  # share of the training features held out for the selection
    selection_rows: int = 10_000  # training rows the selection fits at most (0: all)
    steps: int = 200  # L-BFGS iterations at most per fit (it usually converges earlier)
    tolerance: float = 1e-3  # stop when the loss improves less than this (relative) ...
    check_every: int = 10  # ... over this many iterations; either at 0 runs fits to `steps`
    seed: int = 0


@dataclass
class KnnSettings:
    k: int = 200
    temperature: float = 0.1
    chunk: int = 1024  # test rows per similarity block (memory: chunk x N floats)


@dataclass
class FinetuneSettings:
    steps: int = 1000
    lr: float = 0.05  # head learning rate (SGD, cosine); the backbone gets lr * backbone_scale
    backbone_scale: float = 0.1
    batch_size: int = 128
    seed: int = 0
