"""Experiment configuration: nested dataclasses, YAML files and dotted `key=value` overrides.

The dataclasses are the single source of truth for keys, types, defaults and help. A config
is resolved in three layers: dataclass defaults < YAML file < command-line overrides, and then
validated; every error names the dotted key (for example `optim.lr`) and what is wrong.

Task-specific settings live in a section named after the task (`counting:` for the counting
task); its dataclass comes from the task registry, so adding a task never edits this file.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the dotted key."""


def param(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    low: float | None = None,
    low_exclusive: bool = False,
    high: float | None = None,
    high_exclusive: bool = False,
    length: int | None = None,
    min_items: int | None = None,
    ascending: bool = False,
    bool_means: tuple[str, str] | None = None,
    same_as: str | None = None,
    from_data: typing.Callable[[str], Any] | None = None,
    sections_for: str | None = None,
) -> Any:
    """A dataclass field with help text and the constraints `validate` checks.

    `choices`, `low` and `high` constrain a value, or every item of a list (`*_exclusive=True`
    makes a bound strict); `length` fixes a list's length, `min_items` bounds it below, and
    `ascending` asks its items never to decrease. `bool_means` lets a string setting that
    grew out of a yes/no one keep taking `false` / `true`, read as its two strings. Mutable
    defaults (lists) are copied per instance.

    Settings `resolve` completes before anything is built from the config: `same_as` names
    the dotted key an empty string stands for (`transitive.patches` is `data.path` unless
    set); `from_data(data.path)` reads what 0 stands for from the data's header (the number
    of classes); `sections_for` names the list of tasks whose settings sections a
    {task name: settings} mapping holds (multi-task's `settings`).
    """
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "low_exclusive": low_exclusive,
        "high": high,
        "high_exclusive": high_exclusive,
        "length": length,
        "min_items": min_items,
        "ascending": ascending,
        "bool_means": bool_means,
        "same_as": same_as,
        "from_data": from_data,
        "sections_for": sections_for,
    }
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def probability(default: float, help: str) -> Any:
    """A setting in [0, 1]."""
    return param(default, help, low=0.0, high=1.0)


def fraction_range(default: list[float], help: str) -> Any:
    """A [low, high] setting with 0 < low <= high <= 1 (a crop's share of the image area)."""
    return param(default, help, low=0.0, low_exclusive=True, high=1.0, length=2, ascending=True)


@dataclass
class DataConfig:
    path: str = param(
        "",
        "Training images: an image folder (ImageFolder tree or flat) or an .npz "
        "(`images` uint8 NHWC, or packed JPEG `jpeg` + `offsets`).",
    )
    image_size: int = param(
        32,
        "Side of the square uint8 image every sample is brought to before "
        "views are built: shorter side resized to it, then centre-cropped. "
        "32 for CIFAR, 64 for Tiny ImageNet, 256 for ImageNet (at most 4096).",
        low=8,
        high=4096,
    )
    batch_size: int = param(128, "Images per step per process (DDP: per rank).", low=1)
    cache: str = param(
        "auto",
        "`device` decodes everything once into a uint8 tensor on the training GPU and gathers "
        "each batch there (no host-to-GPU copies; on a CPU it is `memory`); `memory` keeps "
        "that tensor in host memory; `stream` decodes each batch in DataLoader workers. "
        "`auto`: `device` on CUDA when it fits in `device_cache_max_gb`, else `memory` when "
        "it fits in `cache_max_gb`, else `stream`. All three give identical pixels.",
        choices=("auto", "device", "memory", "stream"),
    )
    cache_max_gb: float = param(
        4.0, "Largest decoded cache `auto` will build in host memory, in GiB.", low=0.0
    )
    device_cache_max_gb: float = param(
        8.0,
        "Largest decoded cache `auto` will keep on the GPU, in GiB (every DDP rank holds a "
        "full copy). 8 leaves most of a 24-80 GiB GPU to activations; CIFAR-10 at 32 px is "
        "0.14 GiB, ImageNet at 64 px 15 GiB (stays in host memory).",
        low=0.0,
    )
    decode: str = param(
        "cpu",
        "Stream mode only: `cpu` decodes with PIL in DataLoader workers; `device` has the "
        "workers only read the files and decodes JPEGs in batches on the training device "
        "(nvjpeg on CUDA), worth it when a few CPU cores per GPU cannot keep up with "
        "full-size JPEGs. Other formats, and JPEGs nvjpeg refuses, still go through PIL. "
        "Pixels differ slightly from `cpu` (another JPEG decoder and resize).",
        choices=("cpu", "device"),
    )
    workers: int = param(
        2,
        "DataLoader worker processes for decoding (stream mode and the one-off cache build).",
        low=0,
    )
    on_bad_image: str = param(
        "raise",
        "A corrupt or unreadable image: `raise` stops naming the "
        "file; `skip` drops it and counts it.",
        choices=("raise", "skip"),
    )
    small_images: str = param(
        "upscale",
        "Images whose shorter side is below `image_size`: "
        "`upscale` them (bicubic) or `reject` them as bad images.",
        choices=("upscale", "reject"),
    )


@dataclass
class BackboneConfig:
    name: str = param(
        "alexnet_small",
        "Backbone architecture (see `selfsup list backbones`), or any timm model as "
        "`timm:<model>` (e.g. timm:resnet50, timm:convnext_tiny; needs "
        "pip install 'selfsup[timm]'; fresh weights, never downloaded).",
    )
    batch_norm: bool = param(
        True, "AlexNet, VGG: batch norm after every conv (not for timm models)."
    )
    width: float = param(
        1.0,
        "ResNet, VGG: channel width multiplier (not for timm models).",
        low=0.0,
        low_exclusive=True,
    )
    stem: str = param(
        "imagenet",
        "ResNet stem: `imagenet` (7x7/2 + maxpool) or `small` (3x3/1, for 32-64 px inputs); "
        "not for timm models.",
        choices=("imagenet", "small"),
    )
    num_stages: int = param(
        4, "ResNet: stages kept (the multi-task paper cuts after 3; not for timm models).", low=1
    )

    def check(self, prefix: str) -> None:
        """A timm model (`timm:<model>`) is built as timm defines it: selfsup's own
        architecture settings do not apply to it, and are refused rather than ignored."""
        if not self.name.startswith("timm:"):
            return
        defaults = BackboneConfig.__dataclass_fields__
        for key in ("batch_norm", "width", "stem", "num_stages"):
            if getattr(self, key) != defaults[key].default:
                raise ConfigError(
                    f"{prefix}.{key}: does not apply to timm models ({self.name} is built as "
                    f"timm defines it); leave it at {defaults[key].default!r} or pick another "
                    "timm model"
                )


@dataclass
class OptimConfig:
    name: str = param("sgd", "Optimizer.", choices=("sgd", "adamw"))
    lr: float = param(0.01, "Peak learning rate (after warm-up).", low=0.0, low_exclusive=True)
    momentum: float = param(0.9, "SGD momentum (AdamW: beta1).", low=0.0)
    weight_decay: float = param(
        5e-4, "Decoupled for AdamW, L2 for SGD; not applied to biases and norm parameters.", low=0.0
    )
    decay_norm_and_bias: bool = param(
        False, "Apply weight decay to biases and normalisation parameters too (SimCLR: no)."
    )
    lr_scaling: str = param(
        "none",
        "Scale `lr` by the global batch (batch_size x processes) over `lr_reference_batch`: "
        "`linear`, `sqrt`, or `none` (lr is the peak as given).",
        choices=("none", "linear", "sqrt"),
    )
    lr_reference_batch: int = param(256, "The batch `lr` is given for under lr_scaling.", low=1)
    schedule: str = param(
        "cosine",
        "Learning-rate schedule after warm-up: `cosine` decays to zero at train.steps; "
        "`constant`; `step` multiplies the rate by `lr_step_factor` every `lr_step_every` "
        "steps (counted from step 0: the drops fall at its multiples, warm-up or not).",
        choices=("cosine", "constant", "step"),
    )
    lr_step_factor: float = param(
        0.9,
        "schedule=step: the factor of each drop (the counting paper: 0.9).",
        low=0.0,
        low_exclusive=True,
        high=1.0,
    )
    lr_step_every: int = param(
        10000, "schedule=step: steps between drops (the counting paper: 10,000).", low=1
    )
    warmup_steps: int = param(100, "Linear warm-up steps.", low=0)
    grad_clip: float = param(5.0, "Clip the global gradient norm to this (0 disables).", low=0.0)


@dataclass
class CheckpointConfig:
    every: int = param(200, "Steps between checkpoints (`checkpoints/last.pt`, atomic).", low=1)


@dataclass
class TrainConfig:
    steps: int = param(
        2000,
        "Total optimisation steps; a rerun with a larger value trains on from the last checkpoint.",
        low=1,
    )
    seed: int = param(0, "Seed for weights, data order and views.")
    device: str = param(
        "auto", "`auto` (CUDA when present), `cpu` or `cuda`.", choices=("auto", "cpu", "cuda")
    )
    precision: str = param(
        "auto",
        "`auto`: bf16 autocast on CUDA GPUs that support it (else fp16 AMP); on a CPU, "
        "the faster of bf16 and fp32 for this run's model, timed on its first batch (a few "
        "seconds, cached per CPU model and torch version, recorded in RUN/precision.json). "
        "Or `bf16`, `fp16`, `fp32`.",
        choices=("auto", "bf16", "fp16", "fp32"),
    )
    channels_last: bool = param(True, "Use the channels_last memory format (faster convs).")
    cudnn_benchmark: bool = param(
        True,
        "CUDA: cuDNN times its convolution algorithms for each new input shape and keeps the "
        "fastest (the first steps are slower; the batches keep one shape, so the rest are "
        "faster). false: its default choice.",
    )
    heap: str = param(
        "reuse",
        "`reuse`: on Linux (glibc), freed tensor memory stays in the process for the next step "
        "instead of being unmapped and page-faulted in again (about 20 % of a CPU step at "
        "batch 512); the process then holds its peak memory until it exits. `system`: the C "
        "library's defaults.",
        choices=("reuse", "system"),
    )
    log_every: int = param(20, "Steps between lines in metrics.jsonl.", low=1)
    logger: str = param(
        "jsonl",
        "Where metrics go besides metrics.jsonl (always written): `jsonl` nowhere else; "
        "`tensorboard` also TensorBoard event files in RUN/tensorboard/ (the same scalars, "
        "and every `image_every` steps a labelled grid of the views the task trained on; "
        "needs pip install 'selfsup[tensorboard]'). View with tensorboard --logdir RUN.",
        choices=("jsonl", "tensorboard"),
    )
    image_every: int = param(
        500,
        "logger=tensorboard: steps between image grids of the step's views (tiles and D(x) "
        "for counting, both views for exemplar, patches with their positions, ...); also "
        "the first step. 0: scalars only.",
        low=0,
    )
    compile: str = param(
        "off",
        "torch.compile the task module (a slow first step, faster steps after): `default`; "
        "`max-autotune` (tries more kernels: minutes of compiling, for long GPU runs); "
        "`reduce-overhead` (also CUDA graphs: for GPU steps whose launches cost more than "
        "their kernels, as with small models or batches); `off`. `true` means `default`.",
        choices=("off", "default", "max-autotune", "reduce-overhead"),
        bool_means=("off", "default"),
    )
    init_backbone: str = param(
        "",
        "A run folder, checkpoint or safetensors export whose backbone weights start this run "
        "(fine-tuning); its backbone config must match `backbone`. With a timm backbone also "
        "a state dict saved from that timm model (.pth, .pt or .safetensors; its head is left "
        "out).",
    )
    dist_timeout: float = param(
        300.0,
        "Distributed runs: seconds a process waits for the others (start-up, gradient "
        "all-reduce) before it stops with an error, so a crashed or stuck rank ends the run "
        "instead of hanging it. Raise it if rank 0 takes longer than this to save checkpoints.",
        low=0.0,
        low_exclusive=True,
    )


@dataclass
class ExperimentConfig:
    task: str = param("counting", "Pretext task (see `selfsup list tasks`).")
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # The task's own section (an instance of the task's config dataclass), stored in the
    # YAML under the task's name and validated under that name.
    task_config: Any = field(default=None, metadata={"task_section": True})


# ---------------------------------------------------------------------------------------------
# From plain dicts to dataclasses, with errors that name the key
# ---------------------------------------------------------------------------------------------


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to the field's type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], key)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key)
    raise ConfigError(f"{key}: unsupported type {annotation}")


def from_dict(cls: type, values: dict | None, prefix: str = "") -> Any:
    """Build dataclass `cls` from `values`; unknown keys and bad types raise ConfigError."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known = set(fields)
    for name in values:
        if name not in known:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"unknown key '{where}'; valid keys here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        bool_means = fields[name].metadata.get("bool_means")
        if bool_means and isinstance(value, bool):
            value = bool_means[value]
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def build(cls: type, values: dict | None, prefix: str = "") -> Any:
    """Dataclass `cls` from `values`, validated: every error names its key."""
    cfg = from_dict(cls, values, prefix)
    validate(cfg, prefix)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (tuples become lists, so it round-trips through YAML)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):  # sections keyed by task name
            value = {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in value.items()}
        out[f.name] = value
    return out


def check_bounds(value: Any, meta: Any, key: str) -> None:
    """The `low` / `high` bounds of `param` on a number, or on each item of a list."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_bounds(item, meta, f"{key}[{i}]")
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_exclusive") else value < low):
        bound = f"> {low}" if meta.get("low_exclusive") else f">= {low}"
        raise ConfigError(f"{key}: must be {bound}, got {value!r}")
    if high is not None and (value >= high if meta.get("high_exclusive") else value > high):
        bound = f"< {high}" if meta.get("high_exclusive") else f"<= {high}"
        raise ConfigError(f"{key}: must be {bound}, got {value!r}")


def check_choices(value: Any, choices: tuple | None, key: str) -> None:
    """The `choices` of `param`: the value, or each item of a list, is one of them."""
    if choices is None:
        return
    items = value if isinstance(value, list | tuple) else [value]
    for i, item in enumerate(items):
        if item not in choices:
            where = f"{key}[{i}]" if items is value else key
            raise ConfigError(f"{where}: {item!r} is not one of {', '.join(map(str, choices))}")


def check_list(value: Any, meta: Any, key: str) -> None:
    """The `length`, `min_items` and `ascending` constraints of `param` on a list."""
    if not isinstance(value, list | tuple):
        return
    length, min_items = meta.get("length"), meta.get("min_items")
    if length is not None and len(value) != length:
        raise ConfigError(f"{key}: expected {length} values, got {len(value)}: {list(value)}")
    if min_items is not None and len(value) < min_items:
        raise ConfigError(f"{key}: expected at least {min_items} values, got {list(value)}")
    if meta.get("ascending") and any(a > b for a, b in itertools.pairwise(value)):
        raise ConfigError(f"{key}: values must not decrease, got {list(value)}")


def validate(cfg: Any, prefix: str = "") -> None:
    """Check choices and bounds declared with `param`, recursively; raise naming the key."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.metadata.get("task_section"):
            continue
        if dataclasses.is_dataclass(value):
            validate(value, key)
            continue
        check_choices(value, f.metadata.get("choices"), key)
        check_list(value, f.metadata, key)
        check_bounds(value, f.metadata, key)
    check = getattr(cfg, "check", None)
    if callable(check):
        check(prefix)


# ---------------------------------------------------------------------------------------------
# Resolving an experiment: defaults < YAML < overrides
# ---------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict:
    """`["optim.lr=0.01", "data.batch_size=64"]` -> nested dict with YAML-typed values."""
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = yaml_problem(err)
            raise ConfigError(f"override {item!r}: not a valid YAML value ({problem})") from err
        if set_dotted(tree, key, value) is not None:
            raise ConfigError(f"override {item!r} conflicts with an earlier override")
    return tree


def set_dotted(tree: dict, key: str, value: Any) -> str | None:
    """`tree["a"]["b"] = value` for `key` "a.b", making the sections on the way. Returns None,
    or, setting nothing, the first section of `key` whose place already holds a value."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return part
    node[leaf] = value
    return None


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what is wrong and where."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so a block pasted twice would override the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {err.start}: {err.reason}); save it "
            "as UTF-8"
        ) from err
    try:
        values = yaml.load(text, Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return values


def resolve(values: dict, task_config_class: typing.Callable[[str], type]) -> ExperimentConfig:
    """The complete, validated ExperimentConfig of a merged dict; nothing changes it after.

    `task_config_class(name)` returns the config dataclass of task `name` (from the task
    registry); the section named after the task is parsed into it, and so is every section a
    task keeps for other tasks (multi-task's `settings`). Settings that stand for another
    (`same_as`) or for what the data says (`from_data`: the number of classes, from the
    data's header) are filled in.
    """
    values = dict(values)
    task = values.get("task", ExperimentConfig.task)
    if not isinstance(task, str):
        raise ConfigError(f"task: expected a task name, got {task!r}")
    task_cls = task_config_class(task)
    task_values = values.pop(task, None)
    values.pop("task_config", None)
    cfg = from_dict(ExperimentConfig, values)
    cfg.task_config = from_dict(task_cls, task_values, task)
    validate(cfg)
    validate(cfg.task_config, task)
    complete(cfg.task_config, task, cfg, task_config_class)
    return cfg


def complete(section: Any, prefix: str, cfg: ExperimentConfig, task_config_class) -> None:
    """Fill in a task section's derived settings (see `param`), and its own task sections."""
    for f in dataclasses.fields(section):
        key, value, meta = f"{prefix}.{f.name}", getattr(section, f.name), f.metadata
        if meta.get("sections_for"):
            setattr(section, f.name, task_sections(section, f.name, key, task_config_class))
            for name, sub in getattr(section, f.name).items():
                complete(sub, f"{key}.{name}", cfg, task_config_class)
        elif meta.get("same_as") and value == "":
            setattr(section, f.name, lookup(cfg, meta["same_as"]))
        elif meta.get("from_data") and value == 0 and cfg.data.path:
            if not Path(cfg.data.path).exists():
                raise ConfigError(
                    f"data.path: {cfg.data.path} does not exist ({key} is read there)"
                )
            found = meta["from_data"](cfg.data.path)
            if not found:
                raise ConfigError(
                    f"{key}: 0 takes it from the data, but {cfg.data.path} does not say it (no "
                    f"labels); set {key}"
                )
            setattr(section, f.name, found)


def task_sections(section: Any, name: str, key: str, task_config_class) -> dict:
    """{task: its settings dataclass, validated} for every task listed in the field that
    `sections_for` names; a task without settings gets its defaults. Settings the section
    implies for a task (its `implied_settings(task)`: {setting: (value, why)}) are filled in,
    and refused, naming why, when given otherwise."""
    given = getattr(section, name) or {}
    implied = getattr(section, "implied_settings", lambda task: {})
    sections = {}
    for task in getattr(section, section.__dataclass_fields__[name].metadata["sections_for"]):
        values = given.get(task)
        if dataclasses.is_dataclass(values):
            values = to_dict(values)
        if isinstance(values, dict | None):
            values = dict(values or {})
            for setting, (value, why) in implied(task).items():
                if values.setdefault(setting, value) != value:
                    raise ConfigError(f"{key}.{task}.{setting}: {why}; got {values[setting]!r}")
        sections[task] = build(task_config_class(task), values, f"{key}.{task}")
    return sections


def lookup(cfg: Any, dotted: str) -> Any:
    """The value of a dotted key (`data.path`) of a config."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def dump(cfg: ExperimentConfig) -> dict:
    """The resolved config as a plain dict with the task section under the task's name."""
    out = to_dict(cfg)
    out.pop("task_config")
    out[cfg.task] = to_dict(cfg.task_config)
    return out


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type name, default, help) for every leaf field; feeds docs and --help."""
    rows = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            rows += field_docs(type(value), key)
        elif "help" in f.metadata:
            type_name = getattr(hints[f.name], "__name__", str(hints[f.name]))
            rows.append((key, type_name, value, f.metadata["help"]))
    return rows


def commented_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML with each key's help as a comment above it."""
    helps = {key: text for key, _, _, text in field_docs(ExperimentConfig)}
    helps.update(
        {f"{cfg.task}.{key}": text for key, _, _, text in field_docs(type(cfg.task_config))}
    )
    for f in dataclasses.fields(cfg.task_config):  # multi-task's sections of its sub-tasks
        if f.metadata.get("sections_for"):
            for name, section in getattr(cfg.task_config, f.name).items():
                prefix = f"{cfg.task}.{f.name}.{name}"
                helps.update({f"{prefix}.{k}": t for k, _, _, t in field_docs(type(section))})
    lines = []

    def emit(values: dict, prefix: str, indent: str) -> None:
        for name, value in values.items():
            key = f"{prefix}.{name}" if prefix else name
            if isinstance(value, dict):
                lines.append(f"{indent}{name}:")
                emit(value, key, indent + "  ")
                continue
            if key in helps:
                lines.append(f"{indent}# {helps[key]}")
            rendered = yaml.safe_dump({name: value}, default_flow_style=True, width=1000)
            lines.append(f"{indent}{rendered.strip()[1:-1]}")

    emit(dump(cfg), "", "")
    return "\n".join(lines) + "\n"
