"""The library's training step, made by the loop's own functions."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from selfsup import train as loop
from selfsup.config import ExperimentConfig
from selfsup.data.streams import batch_items
from selfsup.metrics import MetricWindow
from selfsup.runtime import autocast

from .timing import synchronize, training_flops

PHASES = ("data", "views", "model", "log")


class LoopStepper:
    """Steps of `selfsup train` on a prepared run, made by the loop's own functions.

    `full`: one iteration of the loop (next cached batch, train.step_views, train.optimize,
    MetricWindow.add, and its read every `train.log_every` steps). On a CPU each phase is
    timed; on a GPU, where timing a phase means waiting for the device, none is, so that the
    step overlaps host and device work as the loop does. `bare`: train.optimize alone, on
    the views of one batch built once. `views_only`: the batch and its views, no model.
    """

    def __init__(self, cfg: ExperimentConfig, folder: Path):
        started = time.perf_counter()
        self.run = loop.prepare(cfg, folder, progress=False)
        self.prepare_seconds = round(time.perf_counter() - started, 2)
        self.trained, self.scaler, self.amp_dtype = loop.training_setup(self.run)
        self.batches = self.run.data.batches(0)
        self.window = MetricWindow()
        self.timed_phases = self.run.device.type != "cuda"
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        self.step = 0
        self.views: dict | None = None

    def compiled(self) -> LoopStepper:
        """The same run, model and batches, stepped through torch.compile(model)."""
        other = copy.copy(self)
        other.trained = torch.compile(self.run.model)
        other.phase_seconds = dict.fromkeys(PHASES, 0.0)
        return other

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.timed_phases:
            synchronize(self.run.device)
        started = time.perf_counter()
        with torch.profiler.record_function(f"perf/{name}"):
            yield
        if self.timed_phases:
            synchronize(self.run.device)
            self.phase_seconds[name] += time.perf_counter() - started

    def phase_shares(self) -> dict[str, float] | None:
        """The share of the timed steps' time spent in each phase (None on a GPU)."""
        if not self.timed_phases:
            return None
        total = sum(self.phase_seconds.values()) or 1.0
        return {name: round(value / total, 4) for name, value in self.phase_seconds.items()}

    def next_views(self) -> tuple[int, dict]:
        self.step, fields = next(self.batches)
        return batch_items(fields), loop.step_views(self.run, self.step, fields)

    def full(self) -> int:
        with self.phase("data"):
            self.step, fields = next(self.batches)
        with self.phase("views"):
            views = loop.step_views(self.run, self.step, fields)
        with self.phase("model"):
            out = loop.optimize(
                self.run, self.trained, views, self.step, self.scaler, self.amp_dtype
            )
        with self.phase("log"):
            self.window.add(out, self.step)
            if (self.step + 1) % self.run.cfg.train.log_every == 0:
                self.window.read()
        return batch_items(fields)

    def bare(self) -> int:
        if self.views is None:
            _, self.views = self.next_views()
        loop.optimize(self.run, self.trained, self.views, self.step, self.scaler, self.amp_dtype)
        return self.run.cfg.data.batch_size

    def views_only(self) -> int:
        return self.next_views()[0]

    def flops_per_image(self) -> float:
        """Training FLOPs per image of this task's step (the uncompiled module)."""
        batch, views = self.next_views()

        def loss() -> torch.Tensor:
            with autocast(self.run.device, self.amp_dtype):
                return self.run.model(views)["loss"]

        return training_flops(self.run.model, loss) / batch
