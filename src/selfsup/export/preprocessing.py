"""The JSON that travels with an exported backbone: how to feed it without selfsup.

Everything a user of the exported file needs to reproduce the inputs the backbone was trained
and evaluated on: size, channel order and scale, mean/std, grayscale conversion, and what comes
out (the final layer's name and shape).
"""

from __future__ import annotations

from typing import Any

from selfsup import __version__
from selfsup.config import DataConfig
from selfsup.data.views import LUMA, MEAN, STD
from selfsup.runs import LoadedBackbone


def find_key(values: Any, key: str) -> Any:
    """The first value stored under `key` anywhere in nested dicts (None if absent)."""
    if not isinstance(values, dict):
        return None
    if key in values:
        return values[key]
    for value in values.values():
        found = find_key(value, key)
        if found is not None:
            return found
    return None


def is_grayscale(config: dict) -> bool:
    """Whether the run fed grayscale images: its `harmonize` setting, wherever a task keeps it.

    Multi-task training can "harmonize" inputs by making every image grayscale; a bool says
    on/off, a string names the mode ("none" and "off" mean colour).
    """
    value = find_key(config, "harmonize")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "none", "off", "false", "no")
    return bool(value)


def input_size(config: dict) -> int:
    """The side the run's images were brought to (its data.image_size)."""
    return int(config.get("data", {}).get("image_size", DataConfig().image_size))


def preprocessing_info(loaded: LoadedBackbone, fmt: str, file_name: str) -> dict:
    """The sidecar description of `loaded`'s backbone exported as `fmt` to `file_name`."""
    backbone = loaded.backbone
    size = max(input_size(loaded.config), backbone.min_input_size)
    channels, height, width = backbone.feature_shapes(size)[backbone.layer_names[-1]]
    grayscale = is_grayscale(loaded.config)
    return {
        "file": file_name,
        "format": fmt,
        "exported_by": f"selfsup {__version__}",
        "model": {"name": loaded.name, "step": loaded.step},
        "backbone": loaded.config.get("backbone", {"name": loaded.name.removeprefix("random:")}),
        "input": {
            "layout": "NCHW float32",
            "channels": "RGB",
            "size": size,
            "min_size": backbone.min_input_size,
            "resize": "shorter side to `size`, then centre crop to size x size",
            "scale": "pixel / 255, to [0, 1]",
            "grayscale": grayscale,
            "grayscale_weights": list(LUMA) if grayscale else None,
            "mean": list(MEAN),
            "std": list(STD),
            "formula": "((grayscale(x) if grayscale else x) / 255 - mean) / std, per channel",
        },
        "output": {
            "layer": backbone.layer_names[-1],
            "shape_at_size": [channels, height, width],
            "pooling_for_features": "average over the spatial dimensions",
        },
        "layer_names": list(backbone.layer_names),
        "probe_layers": list(backbone.probe_layers),
    }
