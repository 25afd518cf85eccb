"""The JSON that travels with an exported backbone: how to feed it without selfsup.

Everything a user of the exported file needs to reproduce the inputs the backbone was trained
and evaluated on (the run's input record, `selfsup.data.trunk_input`): size, channel order and
scale, colour mode, mean/std, and what comes out (the final layer's name and shape).
"""

from __future__ import annotations

from dataclasses import replace

from selfsup import __version__
from selfsup.config import DataConfig
from selfsup.runs import LoadedBackbone


def input_size(loaded: LoadedBackbone) -> int:
    """The side to feed the trunk at: its record's (the run's data.image_size), at least the
    backbone's smallest input."""
    size = loaded.input.size or DataConfig().image_size
    return max(size, loaded.backbone.min_input_size)


def preprocessing_info(loaded: LoadedBackbone, fmt: str, file_name: str) -> dict:
    """The sidecar description of `loaded`'s backbone exported as `fmt` to `file_name`."""
    backbone = loaded.backbone
    size = input_size(loaded)
    channels, height, width = backbone.feature_shapes(size)[backbone.layer_names[-1]]
    return {
        "file": file_name,
        "format": fmt,
        "exported_by": f"selfsup {__version__}",
        "model": {"name": loaded.name, "step": loaded.step},
        "backbone": loaded.config.get("backbone", {"name": loaded.name.removeprefix("random:")}),
        "input": {
            **replace(loaded.input, size=size).describe(),
            "min_size": backbone.min_input_size,
        },
        "output": {
            "layer": backbone.layer_names[-1],
            "shape_at_size": [channels, height, width],
            "pooling_for_features": "average over the spatial dimensions",
        },
        "layer_names": list(backbone.layer_names),
        "probe_layers": loaded.probe_layers,
        # A multi-task lasso run never trained its layers past the lasso stage (its `final`
        # BN-ReLU keeps its initial statistics): read `probe_layers` instead.
        "untrained_layers": sorted(loaded.untrained),
    }
