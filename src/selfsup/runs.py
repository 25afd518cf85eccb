"""Naming a trained model: a run folder, a checkpoint file, an exported .safetensors backbone
(`selfsup export`), or `random:<backbone>`.

Evaluation and export take any of these and get back the backbone with its weights, plus the
config it was trained with (so, for example, a random-init baseline has exactly the
architecture of the run it is compared with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfsup import checkpoint
from selfsup.backbones import Backbone, build_backbone
from selfsup.config import BackboneConfig, ConfigError, from_dict


def backbone_from_config(cfg: BackboneConfig) -> Backbone:
    """The backbone a config describes (keys an architecture has no use for are dropped)."""
    if cfg.name.startswith("alexnet"):
        return build_backbone(cfg.name, batch_norm=cfg.batch_norm)
    return build_backbone(cfg.name, width=cfg.width, stem=cfg.stem, num_stages=cfg.num_stages)


@dataclass
class LoadedBackbone:
    backbone: Backbone
    name: str  # what tables call it: the run folder name, or "random:<arch>"
    config: dict  # the resolved training config ({} for random:<arch>)
    step: int  # training steps behind the weights (0 for random init)
    source: str  # the checkpoint path, or "random init"


def checkpoint_path(spec: str | Path) -> Path:
    """A run folder -> its checkpoints/last.pt; a file -> itself."""
    path = Path(spec)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise checkpoint.CheckpointError(
            f"{spec}: not a run folder with checkpoints/last.pt nor a checkpoint file"
        )
    return path


def load_backbone(spec: str, random_init: bool = False, seed: int = 0) -> LoadedBackbone:
    """The backbone named by `spec`; with `random_init`, its architecture with fresh weights."""
    import torch

    if spec.startswith("random:"):
        arch = spec.split(":", 1)[1]
        cfg = from_dict(BackboneConfig, {"name": arch}, "backbone")
        torch.manual_seed(seed)
        return LoadedBackbone(backbone_from_config(cfg), spec, {}, 0, "random init")
    path = checkpoint_path(spec)
    if path.suffix == ".safetensors":
        return load_exported_backbone(path, random_init, seed)
    state = checkpoint.load(path)
    config = state.get("config", {})
    try:
        backbone_cfg = from_dict(BackboneConfig, config.get("backbone"), "backbone")
    except ConfigError as err:
        raise checkpoint.CheckpointError(f"{path}: its stored config is unusable ({err})") from err
    torch.manual_seed(seed)
    backbone = backbone_from_config(backbone_cfg)
    name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    if random_init:
        return LoadedBackbone(backbone, f"random:{backbone_cfg.name}", config, 0, "random init")
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    checkpoint.load_module_state(backbone, weights, path)
    # A harmonized multi-task run saw grayscale images only: evaluate it on grayscale too.
    backbone.input_grayscale = bool(config.get("multitask", {}).get("harmonize", False))
    return LoadedBackbone(backbone, name, config, int(state.get("step", 0)), str(path))


def load_exported_backbone(path: Path, random_init: bool, seed: int) -> LoadedBackbone:
    """A backbone written by `selfsup export --format safetensors` (weights + metadata)."""
    import torch

    from selfsup.export.formats import load_safetensors_backbone

    backbone, info = load_safetensors_backbone(path)
    # The run's config when the file carries it, else what evaluation reads from one.
    config = info["training_config"] or {
        "backbone": info["backbone"],
        "data": {"image_size": info["input"]["size"]},
    }
    if random_init:
        torch.manual_seed(seed)
        backbone_cfg = from_dict(BackboneConfig, info["backbone"], "backbone")
        fresh = backbone_from_config(backbone_cfg)
        return LoadedBackbone(fresh, f"random:{backbone_cfg.name}", config, 0, "random init")
    step = int(info["model"]["step"])
    return LoadedBackbone(backbone, path.stem, config, step, str(path))
