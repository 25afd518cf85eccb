"""What `selfsup inspect` works on: its settings, kept apart from the code that runs it so the
command line can show the defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InspectSettings:
    data: str | None = None  # images to analyse (default: the run's training data)
    max_images: int = 2000
    device: str = "auto"
    workers: int = 2
    seed: int = 0  # the image sample and the random-init baseline
    progress: bool = True
