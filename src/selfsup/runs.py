"""Naming a trained model: a run folder, a checkpoint file, an exported .safetensors backbone
(`selfsup export`: the file, the path given to its --out, or the folder holding
backbone.safetensors), or `random:<backbone>`.

Evaluation and export take any of these and get back the backbone with its weights, plus the
config it was trained with (so, for example, a random-init baseline has exactly the
architecture of the run it is compared with).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from selfsup import checkpoint
from selfsup.backbones import Backbone, backbone_kwargs, build_backbone
from selfsup.config import BackboneConfig, ConfigError, from_dict
from selfsup.data.trunk_input import TrunkInput, input_of_checkpoint
from selfsup.outputs import input_file

EXPORTED_NAME = "backbone.safetensors"  # what `selfsup export --out FOLDER/` writes there
METADATA_KEY = "selfsup"  # safetensors metadata entry holding the preprocessing JSON
CONFIG_KEY = "training_config"  # and the run's config, so evaluation treats it like the run


def backbone_from_config(cfg: BackboneConfig) -> Backbone:
    """The backbone a config describes: the settings its factory takes (keys an
    architecture has no use for are dropped; those it takes and the config lacks keep the
    factory's defaults)."""
    taken = backbone_kwargs(cfg.name)
    return build_backbone(cfg.name, **{k: getattr(cfg, k) for k in taken if hasattr(cfg, k)})


@dataclass
class LoadedBackbone:
    backbone: Backbone
    name: str  # what tables call it: the run folder name, or "random:<arch>"
    config: dict  # the resolved training config ({} for random:<arch>)
    step: int  # training steps behind the weights (0 for random init)
    source: str  # the checkpoint path, or "random init"
    input: TrunkInput  # what the trunk is fed: the run's record (a random init: its run's)


def checkpoint_path(spec: str | Path) -> Path:
    """The model file `spec` names: a run folder -> its checkpoints/last.pt; a folder holding
    an exported backbone.safetensors -> that; a file -> itself; a path without extension that
    `selfsup export --format safetensors` was given -> the .safetensors it wrote."""
    run_checkpoint = Path(spec) / "checkpoints" / "last.pt"
    path = run_checkpoint if run_checkpoint.is_file() else input_file(spec, EXPORTED_NAME)
    if not path.is_file():
        raise checkpoint.CheckpointError(
            f"{spec}: not a run folder with checkpoints/last.pt, a checkpoint file nor a "
            "backbone exported with `selfsup export --format safetensors`"
        )
    return path


def sidecar_path(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`: the preprocessing description beside the model."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def is_safetensors(path: Path) -> bool:
    """Whether `path` is a safetensors file: an 8-byte header length, then a JSON header."""
    with open(path, "rb") as file:
        head = file.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") > 1


def refuse_other_exports(path: Path) -> None:
    """An export selfsup cannot read back (torchscript, onnx, torchvision) is named as such,
    not reported as a corrupt checkpoint."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    try:
        fmt = json.loads(sidecar.read_text()).get("format")
    except (ValueError, AttributeError):
        return
    if fmt and fmt != "safetensors":
        raise checkpoint.CheckpointError(
            f"{path}: a backbone exported as {fmt}, for use outside selfsup; selfsup reads back "
            "run folders, checkpoints and `selfsup export --format safetensors` files"
        )


def load_backbone(spec: str, random_init: bool = False, seed: int = 0) -> LoadedBackbone:
    """The backbone named by `spec`; with `random_init`, its architecture with fresh weights."""
    import torch

    if spec.startswith("random:"):
        arch = spec.split(":", 1)[1]
        cfg = from_dict(BackboneConfig, {"name": arch}, "backbone")
        torch.manual_seed(seed)
        return LoadedBackbone(backbone_from_config(cfg), spec, {}, 0, "random init", TrunkInput())
    path = checkpoint_path(spec)
    if is_safetensors(path):
        return load_exported_backbone(path, random_init, seed)
    refuse_other_exports(path)
    state = checkpoint.load(path)
    config = state.get("config", {})
    try:
        backbone_cfg = from_dict(BackboneConfig, config.get("backbone"), "backbone")
    except ConfigError as err:
        raise checkpoint.CheckpointError(f"{path}: its stored config is unusable ({err})") from err
    torch.manual_seed(seed)
    backbone = backbone_from_config(backbone_cfg)
    name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    trunk_input = input_of_checkpoint(state)
    if random_init:
        random_name = f"random:{backbone_cfg.name}"
        return LoadedBackbone(backbone, random_name, config, 0, "random init", trunk_input)
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    checkpoint.load_module_state(backbone, weights, path)
    step = int(state.get("step", 0))
    return LoadedBackbone(backbone, name, config, step, str(path), trunk_input)


def load_exported_backbone(path: Path, random_init: bool, seed: int) -> LoadedBackbone:
    """A backbone written by `selfsup export --format safetensors` (weights + metadata)."""
    import torch

    backbone, info = load_safetensors_backbone(path)
    trunk_input = TrunkInput.from_dict(info["input"])
    # The run's config when the file carries it, else what evaluation reads from one.
    config = info["training_config"] or {
        "backbone": info["backbone"],
        "data": {"image_size": info["input"]["size"]},
    }
    if random_init:
        torch.manual_seed(seed)
        backbone_cfg = from_dict(BackboneConfig, info["backbone"], "backbone")
        fresh = backbone_from_config(backbone_cfg)
        random_name = f"random:{backbone_cfg.name}"
        return LoadedBackbone(fresh, random_name, config, 0, "random init", trunk_input)
    step = int(info["model"]["step"])
    return LoadedBackbone(backbone, path.stem, config, step, str(path), trunk_input)


def load_safetensors_backbone(path: str | Path) -> tuple[Backbone, dict]:
    """The backbone in an exported .safetensors file (architecture from its metadata), and
    the preprocessing description with the run's config under `training_config`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        weights = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
        raise checkpoint.CheckpointError(
            f"{path}: a truncated or corrupted safetensors file ({err})"
        ) from err
    if METADATA_KEY not in metadata:
        raise checkpoint.CheckpointError(f"{path}: a safetensors file without selfsup's metadata")
    info = json.loads(metadata[METADATA_KEY])
    info[CONFIG_KEY] = json.loads(metadata.get(CONFIG_KEY, "{}"))
    backbone = backbone_from_config(from_dict(BackboneConfig, info["backbone"], "backbone"))
    checkpoint.load_module_state(backbone, weights, path)
    return backbone.eval(), info
