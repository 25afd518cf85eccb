"""What an evaluation's RUN names, including the floor and ceiling baselines.

- a run folder or a checkpoint file: its trained backbone;
- `random:<backbone>` or `random:<run>`: that architecture with fresh weights (the floor);
- `supervised:<backbone>` or `supervised:<run>`: that architecture trained with labels on the
  evaluation's training data through the same loop (the ceiling). With a run, the baseline gets
  the run's budget (steps and batch size); with a backbone name, `--steps`.

Supervised baselines and fine-tuning runs are ordinary run folders under the cache directory,
keyed by architecture, data and budget, so a second evaluation reuses them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

from selfsup.checkpoint import CheckpointError
from selfsup.config import BackboneConfig, ConfigError, from_dict, to_dict
from selfsup.eval.finetune import FinetuneSettings, run_supervised, supervised_config
from selfsup.eval.protocol import EvalOptions, LabelledImages, check_compatible
from selfsup.features import weights_fingerprint
from selfsup.runs import LoadedBackbone, checkpoint_path, load_backbone


def split_spec(spec: str) -> tuple[str, str]:
    """`random:x` -> ("random", "x"); `supervised:x` -> ("supervised", "x"); else ("run", x)."""
    for kind in ("random", "supervised"):
        if spec.startswith(f"{kind}:"):
            return kind, spec.split(":", 1)[1]
    return "run", spec


def is_run(target: str) -> bool:
    """Whether `target` names a model on disk (as `runs.checkpoint_path` finds one, e.g. the
    path `selfsup export` was given), not a backbone name."""
    try:
        checkpoint_path(target)
    except CheckpointError:
        return Path(target).exists()  # on disk but unusable: loading it names the problem
    return True


def architecture(target: str) -> tuple[dict, dict]:
    """(backbone config dict, the run's full config or {}) for a run path or backbone name."""
    if is_run(target):
        loaded = load_backbone(target)
        return loaded.config["backbone"], loaded.config
    try:
        return to_dict(from_dict(BackboneConfig, {"name": target}, "backbone")), {}
    except ConfigError as err:
        raise ConfigError(f"{target}: neither a run folder, a checkpoint nor a backbone") from err


def cache_folder(options: EvalOptions, kind: str, payload: dict) -> Path:
    """A run folder under the cache, named by a hash of what determines its weights."""
    if options.cache_dir is None:
        raise ConfigError("baselines that train need a cache directory (drop --no-cache)")
    key = hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=8)
    return options.cache_dir / "runs" / f"{kind}-{payload['backbone']['name']}-{key.hexdigest()}"


def budget(run_config: dict, settings: FinetuneSettings) -> FinetuneSettings:
    """A run's steps and batch size when the baseline stands beside a run."""
    if not run_config:
        return settings
    return replace(
        settings,
        steps=int(run_config["train"]["steps"]),
        batch_size=int(run_config["data"]["batch_size"]),
    )


def resolve_model(
    spec: str,
    train: LabelledImages,
    test: LabelledImages,
    options: EvalOptions,
    settings: FinetuneSettings | None = None,
) -> LoadedBackbone:
    """The frozen backbone `spec` names (training the supervised baseline if needed)."""
    kind, target = split_spec(spec)
    if kind == "run":
        return load_backbone(target)
    if kind == "random":
        if is_run(target):
            loaded = load_backbone(target, random_init=True)
            return replace(loaded, name=f"random:{loaded.config['backbone']['name']}")
        return load_backbone(spec)
    backbone, run_config = architecture(target)
    settings = budget(run_config, settings or FinetuneSettings())
    size = int(train.images.shape[-1])
    payload = {"backbone": backbone, "data": train.key, "size": size, **asdict(settings)}
    folder = cache_folder(options, "supervised", payload)
    cfg = supervised_config(backbone, train.name, size, settings)
    run_supervised(cfg, folder, test, options, cached=True)
    loaded = load_backbone(str(folder))
    return replace(loaded, name=f"supervised:{backbone['name']}")


def finetune_eval(
    spec: str,
    train: LabelledImages,
    test: LabelledImages,
    settings: FinetuneSettings | None = None,
    options: EvalOptions | None = None,
    out: Path | None = None,
) -> dict:
    """Fine-tune the backbone `spec` names (random:... trains from scratch) and score it."""
    options, settings = options or EvalOptions(), settings or FinetuneSettings()
    check_compatible(train, test)
    kind, target = split_spec(spec)
    if kind == "supervised":
        raise ConfigError("fine-tuning a supervised baseline: fine-tune the run instead")
    backbone, _ = architecture(target)
    init = target if kind == "run" else ""
    scale = settings.backbone_scale if init else 1.0
    size = int(train.images.shape[-1])
    cached = out is None
    if cached:
        weights = weights_fingerprint(load_backbone(target).backbone) if init else "random"
        payload = {"backbone": backbone, "init": weights, "data": train.key, **asdict(settings)}
        out = cache_folder(options, "finetune", payload)
    cfg = supervised_config(backbone, train.name, size, settings, init, scale)
    result = run_supervised(cfg, Path(out), test, options, cached)
    name = load_backbone(target).name if init else f"random:{backbone['name']}"
    return {
        "protocol": "finetune",
        "model": name,
        "train_data": train.name,
        "test_data": test.name,
        "image_size": size,
        "settings": asdict(settings),
        "backbone_lr_scale": scale,
        "seconds": result["seconds"],
        "run": result["run"],
        "layers": [{"layer": "finetuned", "top1": result["top1"], "top5": result["top5"]}],
    }
