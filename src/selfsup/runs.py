"""Naming a trained model: a run folder, a checkpoint file, an exported .safetensors backbone
(`selfsup export`: the file, the path given to its --out, or the folder holding
backbone.safetensors), or `random:<backbone>`.

Evaluation and export take any of these and get back the backbone with its weights, plus the
config it was trained with (so, for example, a random-init baseline has exactly the
architecture of the run it is compared with), and which of its layers a probe may read: a
multi-task lasso run never trained the layers after its lasso stage (the trunk's `final`
among them), and its heads read `lasso:<task>` layers instead (`backbones/lasso.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfsup import checkpoint
from selfsup.backbones import Backbone, backbone_kwargs, build_backbone
from selfsup.backbones.lasso import READOUT_PREFIX, LassoReadout, lasso_applies, untrained_after
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
    untrained: dict[str, str] = field(default_factory=dict)  # layer -> why it never trained
    readout: LassoReadout | None = None  # a lasso run's trunk with its `lasso:<task>` layers

    @property
    def probe_layers(self) -> list[str]:
        """The layers probes read by default: the backbone's, less those that never trained;
        a lasso run's untrained `final` gives way to the last unit its heads read."""
        if not self.untrained:
            return list(self.backbone.probe_layers)
        layers = [name for name in self.backbone.probe_layers if name not in self.untrained]
        return list(dict.fromkeys([*layers, self.final_layer]))

    @property
    def final_layer(self) -> str:
        """The deepest layer that trained (the backbone's last, unless it never trained)."""
        names = [*self.backbone.layer_names, *self.backbone.aliases]
        trained = [name for name in self.backbone.layer_names if name not in self.untrained]
        last = trained[-1]
        # Name the last trained unit as probes do: `layer3` rather than `layer3.22`.
        return next((a for a in names if self.backbone.aliases.get(a) == last), last)

    def reader(self, layers: Sequence[str], flag: str = "--layers") -> Backbone:
        """The module that computes `layers`: the backbone, or with `lasso:<task>` layers the
        lasso readout. Refuses layers that never trained, naming why, and unknown ones."""
        refused = [layer for layer in layers if layer in self.untrained]
        if refused:
            reasons = "; ".join(f"{layer}: {self.untrained[layer]}" for layer in refused)
            raise ConfigError(
                f"{self.name}: layer(s) {refused} never trained ({reasons}); probe "
                f"{', '.join(self.probe_layers)}"
                + (f" or {', '.join(self.readout.readout_layers)}" if self.readout else "")
            )
        wanted_readouts = [layer for layer in layers if layer.startswith(READOUT_PREFIX)]
        if wanted_readouts and self.readout is None:
            raise ConfigError(
                f"{self.name}: {wanted_readouts} are the layers a multi-task lasso run's heads "
                "read; this model has none (not a lasso run, or an export, which holds the "
                "trunk only: evaluate the run folder)"
            )
        module = self.readout if wanted_readouts else self.backbone
        unknown = [layer for layer in layers if layer not in module.layer_channels]
        if unknown:
            extra = f", {', '.join(self.readout.readout_layers)}" if self.readout else ""
            raise ConfigError(
                f"{flag}: unknown layer(s) {unknown}; this backbone has "
                f"{', '.join(self.backbone.layer_names)}{extra} and the aliases "
                f"{', '.join(self.backbone.aliases) or 'none'}"
            )
        return module


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


def is_timm_weights(spec: str | Path) -> bool:
    """Whether `spec` is a weights file that selfsup did not write (no run folder, no selfsup
    checkpoint, no selfsup export): a state dict saved from a timm model, for a
    `timm:<model>` backbone (`train.init_backbone`)."""
    path = Path(spec)
    if not path.is_file():
        return False
    if is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                return METADATA_KEY not in (file.metadata() or {})
        except Exception:  # a damaged file: load_backbone names it
            return False
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable, or pickled objects: load_backbone says which
        return False
    return not (isinstance(state, dict) and "model" in state and "config" in state)


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
    """The backbone named by `spec` (a run folder, a checkpoint, an exported `.safetensors`,
    or `random:<backbone>`) with what it was trained on: `.backbone` (a module, on the
    CPU), `.input` (how its images are fed), `.config`, `.step`; with `random_init`, the
    same architecture with fresh weights.

    >>> import selfsup, torch
    >>> loaded = selfsup.load_backbone("random:resnet18")
    >>> loaded.backbone.probe_layers, loaded.input.colour
    (('stem', 'layer1', 'layer2', 'layer3', 'final'), 'rgb')
    """
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
    untrained = untrained_layers(config, backbone)
    if random_init:  # the run's layers, fresh weights (a fresh alpha: uniform)
        random_name = f"random:{backbone_cfg.name}"
        readout = lasso_readout(backbone, config, None, path)
        return LoadedBackbone(
            backbone, random_name, config, 0, "random init", trunk_input, untrained, readout
        )
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    checkpoint.load_module_state(backbone, weights, path)
    readout = lasso_readout(backbone, config, state["model"], path)
    step = int(state.get("step", 0))
    return LoadedBackbone(backbone, name, config, step, str(path), trunk_input, untrained, readout)


def lasso_of(config: dict, backbone: Backbone) -> tuple[list[str], int] | None:
    """(tasks, stage) of a multi-task lasso run, from its config; None for any other run."""
    section = config.get("multitask") or {}
    if config.get("task") != "multitask":
        return None
    try:
        if not lasso_applies(section.get("lasso", "auto"), backbone):
            return None
    except ValueError:  # a config that never trained (the lasso refused this backbone)
        return None
    return list(section.get("tasks", [])), int(section.get("lasso_stage") or backbone.num_stages)


def untrained_layers(config: dict, backbone: Backbone) -> dict[str, str]:
    """{layer: why it never trained} for the run `config` describes: in a lasso run, every
    layer after the lasso stage's last unit (no head reads past it; `final` among them), and
    `lasso:<task>` for a task whose head reads another layer (its `feature_layer`)."""
    lasso = lasso_of(config, backbone)
    if lasso is None:
        return {}
    tasks, stage = lasso
    why = (
        f"in a lasso run every head reads its own combination of stage {stage}'s units "
        f"({READOUT_PREFIX}<task>), none reads the trunk after layer{stage}"
    )
    untrained = dict.fromkeys(untrained_after(backbone, stage), why)
    settings = (config.get("multitask") or {}).get("settings") or {}
    for task in tasks:
        layer = (settings.get(task) or {}).get("feature_layer", "")
        if layer not in ("", backbone.layer_names[-1]):
            untrained[READOUT_PREFIX + task] = f"{task}'s head reads {layer} (its feature_layer)"
    return untrained


def lasso_readout(
    backbone: Backbone, config: dict, model_state: dict | None, path: Path
) -> LassoReadout | None:
    """A lasso run's `lasso:<task>` layers over `backbone`: alpha and each task's BN-ReLU
    from the checkpoint's model state (None: fresh, for a random init); None for other runs."""
    lasso = lasso_of(config, backbone)
    if lasso is None:
        return None
    readout = LassoReadout(backbone, *lasso)
    if model_state is None:
        return readout
    for row, task in enumerate(readout.tasks):
        prefix = f"subtasks.{task}.backbone.norm."
        norm = {k[len(prefix) :]: v for k, v in model_state.items() if k.startswith(prefix)}
        checkpoint.load_module_state(readout.views[row].norm, norm, path)
    if "alphas.alpha" not in model_state:
        raise checkpoint.CheckpointError(f"{path}: a lasso run's checkpoint without alphas.alpha")
    checkpoint.load_module_state(readout.alphas, {"alpha": model_state["alphas.alpha"]}, path)
    return readout.eval()


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
    # An export holds the trunk only: no `lasso:<task>` layers, but the same untrained ones.
    untrained = untrained_layers(config, backbone)
    if random_init:
        torch.manual_seed(seed)
        backbone_cfg = from_dict(BackboneConfig, info["backbone"], "backbone")
        fresh = backbone_from_config(backbone_cfg)
        random_name = f"random:{backbone_cfg.name}"
        return LoadedBackbone(fresh, random_name, config, 0, "random init", trunk_input, untrained)
    step = int(info["model"]["step"])
    return LoadedBackbone(backbone, path.stem, config, step, str(path), trunk_input, untrained)


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
