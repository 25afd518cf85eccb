"""Writing a trained backbone alone, in a format other tools read, with its preprocessing JSON.

- safetensors: the weights only (no code can run on loading); the architecture is in the file's
  metadata and the JSON, and `selfsup.runs.load_safetensors_backbone` rebuilds it.
- torchscript: a traced graph, loadable with `torch.jit.load` without selfsup.
- onnx: a graph with dynamic batch, height and width, for onnxruntime and other runtimes.
- torchvision: a state dict under torchvision's names, for `alexnet_torchvision` only.

Every format is exported from the backbone in eval mode (batch norm uses its running
statistics), in float32 on the CPU, and outputs the final feature map (B, C, h, w).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch

from selfsup.backbones import Backbone
from selfsup.export import EXTENSIONS, FORMATS
from selfsup.export.preprocessing import preprocessing_info
from selfsup.outputs import output_file
from selfsup.runs import CONFIG_KEY, METADATA_KEY, LoadedBackbone, sidecar_path


class ExportError(ValueError):
    """The backbone cannot be written in the asked format (missing package, no counterpart)."""


def export_backbone(loaded: LoadedBackbone, fmt: str, out: str | Path) -> tuple[Path, Path]:
    """Write `loaded.backbone` as `fmt` for `--out` (see selfsup.outputs: `m` -> m.onnx,
    `folder/` -> folder/backbone.onnx) and its JSON beside it; returns both paths."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = output_file(out, f"backbone{EXTENSIONS[fmt]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone = loaded.backbone.cpu().float().eval()
    info = preprocessing_info(loaded, fmt, out.name)
    example = torch.zeros(1, 3, info["input"]["size"], info["input"]["size"])
    if fmt == "safetensors":
        write_safetensors(backbone, out, info, loaded.config)
    elif fmt == "torchscript":
        write_torchscript(backbone, example, out)
    elif fmt == "onnx":
        info["onnx"] = write_onnx(backbone, example, out)
    else:
        write_torchvision(backbone, out)
    sidecar = sidecar_path(out)
    sidecar.write_text(json.dumps(info, indent=2) + "\n")
    return out, sidecar


def write_safetensors(backbone: Backbone, out: Path, info: dict, config: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    metadata = {METADATA_KEY: json.dumps(info), CONFIG_KEY: json.dumps(config)}
    save_file(state, str(out), metadata=metadata)


def write_torchscript(backbone: Backbone, example: torch.Tensor, out: Path) -> None:
    # The input-shape checks in `Backbone.forward` become constants in the trace (harmless:
    # the graph is convolutional), and torch now flags jit as deprecated; neither warning
    # concerns the user of the exported file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(backbone, example)
        torch.jit.save(traced, str(out))


def write_onnx(backbone: Backbone, example: torch.Tensor, out: Path) -> dict:
    """Export with the TorchScript-based exporter, which needs no extra package (the newer
    dynamo exporter needs onnxscript); returns the graph's input/output names."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("format onnx needs the onnx package: pip install 'selfsup[onnx]'")
    names = {"input": "images", "output": "features"}
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same trace-time and deprecation notices
        torch.onnx.export(
            backbone,
            (example,),
            str(out),
            dynamo=False,
            input_names=[names["input"]],
            output_names=[names["output"]],
            dynamic_axes={names["input"]: axes, names["output"]: axes},
        )
    return {**names, "dynamic_axes": "batch, height, width"}


def write_torchvision(backbone: Backbone, out: Path) -> None:
    from selfsup.backbones.torchvision_io import TorchvisionMismatchError, torchvision_state

    try:
        state = torchvision_state(backbone)
    except TorchvisionMismatchError as err:
        raise ExportError(f"format torchvision: {err}") from err
    torch.save(state, out)
