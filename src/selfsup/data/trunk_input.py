"""The input a trained trunk expects, recorded once and read through one function.

Training decides it from the run's settings (`input_of_config`): colour images, or the CIE
lightness L for colorization (its trunk never sees colour) and for a multi-task run that
harmonizes its inputs (every task then sees colorization's input). `grayscale` (luma) is
kept for the records of runs harmonized before harmonization meant lightness. The record is
written into every checkpoint and every export; evaluation, export, embedding, inspection and
the dense protocols all feed a trunk through `TrunkInput.prepare`, so they cannot disagree
about what it saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from selfsup.data import views as V
from selfsup.data.views import LUMA, MEAN, STD

COLOURS = ("rgb", "grayscale", "lightness")

# What each colour mode does to an RGB image in [0, 1], for the exported description.
FORMULAS = {
    "rgb": "x",
    "grayscale": "luma(x) = 0.299 R + 0.587 G + 0.114 B, replicated to the 3 channels",
    "lightness": "CIE L*(x) / 100 (sRGB, D65), replicated to the 3 channels",
}


@dataclass(frozen=True)
class TrunkInput:
    """How images become a trunk's input: colour mode, side, and per-channel mean and std."""

    colour: str = "rgb"
    size: int | None = None  # the run's data.image_size; None: any (a random init of no run)
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"input colour {self.colour!r} is not one of {', '.join(COLOURS)}")

    def convert(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB float in [0, 1] -> the colour mode's 3 channels, in [0, 1]."""
        if self.colour == "grayscale":
            return V.grayscale(images)
        if self.colour == "lightness":
            return lightness_channels(V.rgb_to_lab(images))
        return images

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 (or float in [0, 1]) -> the normalised float input."""
        x = V.to_float(images) if images.dtype == torch.uint8 else images
        return V.normalize(self.convert(x), self.mean, self.std)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict) -> TrunkInput:
        """From `to_dict` or an export's `describe` (earlier exports say only `grayscale`)."""
        colour = values.get("colour") or ("grayscale" if values.get("grayscale") else "rgb")
        size = values.get("size")
        return cls(
            colour=colour,
            size=None if size is None else int(size),
            mean=tuple(values.get("mean", MEAN)),
            std=tuple(values.get("std", STD)),
        )

    def describe(self) -> dict:
        """The exported description: everything needed to feed the trunk without selfsup."""
        return {
            "layout": "NCHW float32",
            "channels": "RGB",
            "size": self.size,
            "resize": "shorter side to `size`, then centre crop to size x size",
            "scale": "pixel / 255, to [0, 1]",
            "colour": self.colour,
            "colour_formula": FORMULAS[self.colour],
            # Kept for readers of earlier exports: grayscale = luma replicated.
            "grayscale": self.colour == "grayscale",
            "grayscale_weights": list(LUMA) if self.colour == "grayscale" else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "(colour(x / 255) - mean) / std, per channel",
        }


def lightness_channels(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (B, 3, H, W) -> L / 100 replicated to the 3 channels (B, 3, H, W), in [0, 1]:
    the lightness input, before normalisation (colorization's input, and every harmonized
    multi-task input)."""
    return (lab[:, :1] / 100).expand(-1, 3, -1, -1)


def input_of_config(config: dict) -> TrunkInput:
    """The input a run's trunk trained on, from its resolved config (a plain dict as saved in
    checkpoints): lightness for colorization and for a harmonized multi-task run, else
    colour; at the run's `data.image_size`."""
    image_size = config.get("data", {}).get("image_size")
    size = None if image_size is None else int(image_size)
    task = config.get("task")
    harmonized = task == "multitask" and config.get("multitask", {}).get("harmonize", False)
    if harmonized or task == "colorization":
        return TrunkInput("lightness", size)
    return TrunkInput("rgb", size)


def input_of_checkpoint(state: dict) -> TrunkInput:
    """The record a checkpoint carries; for checkpoints written before there was one, the
    rule of `input_of_config` on its config."""
    if "input" in state:
        return TrunkInput.from_dict(state["input"])
    return input_of_config(state.get("config", {}))
