"""`selfsup inspect`: one HTML report on what a run learned, with what fits its task.

Every run gets its training curves, nearest-neighbour retrieval and a 2-D feature map; a
counting run also gets the counting analysis, and any checkpoint with a multi-task lasso its
alpha heat map. Work is bounded by `max_images` (a random sample of the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup import checkpoint
from selfsup.analysis.counting import counting_section, counting_stats
from selfsup.analysis.curves import curves_section
from selfsup.analysis.feature_map import map_section
from selfsup.analysis.lasso import lasso_section
from selfsup.analysis.page import Section, write_page
from selfsup.analysis.retrieval import retrieval_section
from selfsup.analysis.settings import InspectSettings
from selfsup.config import resolve
from selfsup.data import decode_all, open_source
from selfsup.data.selections import sample_source
from selfsup.features import extract_features
from selfsup.runs import (
    LoadedBackbone,
    backbone_from_config,
    checkpoint_path,
    is_safetensors,
    load_backbone,
)
from selfsup.runtime import resolve_device
from selfsup.tasks import build_task, list_tasks, task_config_class
from selfsup.tasks.counting import Counting


def run_folder(path: Path) -> Path | None:
    """The run folder of a checkpoint at <run>/checkpoints/<file>, else None."""
    return path.parent.parent if path.parent.name == "checkpoints" else None


@dataclass
class Sample:
    """The images a report is computed on."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor | None  # (N,)
    class_names: list[str] | None
    path: str
    note: str  # whether these are held-out images


def load_sample(config: dict, settings: InspectSettings) -> Sample:
    """A bounded random sample of the data, decoded at the run's image size."""
    trained_on = str(config.get("data", {}).get("path", ""))
    path = settings.data or trained_on
    source = open_source(path)
    size = int(config.get("data", {}).get("image_size", 32))
    decoded = decode_all(
        sample_source(source, settings.max_images, settings.seed),
        size,
        workers=settings.workers,
        on_bad_image="skip",
        progress=settings.progress,
    )
    held_out = settings.data is not None and Path(path).resolve() != Path(trained_on).resolve()
    note = "held-out images" if held_out else "the training images: nothing is held out"
    return Sample(decoded.images, decoded.labels, source.class_names, str(path), note)


def counting_models(state: dict, seed: int) -> tuple[Counting, Counting] | None:
    """The trained counting task (head included) and a random-init one, or None."""
    config = state.get("config", {})
    if config.get("task") != Counting.name or Counting.name not in list_tasks():
        return None
    cfg = resolve(config, task_config_class)
    trained = build_task(cfg.task, cfg.task_config, backbone_from_config(cfg.backbone))
    checkpoint.load_module_state(trained, state["model"], "the inspected checkpoint")
    torch.manual_seed(seed)
    random = build_task(cfg.task, cfg.task_config, backbone_from_config(cfg.backbone))
    return trained, random  # type: ignore[return-value]


def summary_section(loaded: LoadedBackbone, config: dict, data: str, count: int) -> Section:
    backbone = config.get("backbone", {})
    return Section("summary", "Run").table(
        [],
        [
            ["run", loaded.name],
            ["task", config.get("task", "?")],
            ["steps trained", loaded.step],
            ["backbone", ", ".join(f"{k}={v}" for k, v in backbone.items())],
            ["images analysed", f"{count} from {data}"],
        ],
    )


def inspect_run(spec: str, out_dir: str | Path, settings: InspectSettings) -> Path:
    """Write `out_dir`/report.html and its PNGs for the run or checkpoint `spec`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(spec)
    if is_safetensors(path):
        raise checkpoint.CheckpointError(
            f"{path}: an exported backbone has no training record; inspect a run folder or "
            "its checkpoints/last.pt"
        )
    state = checkpoint.load(path)  # the whole task: heads and lasso weights besides the trunk
    config = state.get("config", {})
    loaded = load_backbone(spec)  # reads the file again; keeps one way of building a backbone
    device = resolve_device(settings.device)
    sample = load_sample(config, settings)
    final = loaded.backbone.layer_names[-1]
    features = extract_features(
        loaded.backbone,
        sample.images,
        [final],
        trunk_input=loaded.input,
        device=device,
        amp_dtype=None,
        max_dims=0,
        progress=settings.progress,
        desc=f"features {final}",
    )[final].float()
    sections = [
        summary_section(loaded, config, sample.path, len(sample.images)),
        curves_section(run_folder(path), out),
    ]
    models = counting_models(state, settings.seed)
    if models is not None:
        trained, random = (
            counting_stats(model, sample.images, name, device, progress=settings.progress)
            for model, name in zip(models, ("trained", "random init"))
        )
        sections.append(counting_section(trained, random, sample.images, sample.note, out))
    sections.append(retrieval_section(features, sample.images, sample.labels, out))
    sections.append(map_section(features, sample.labels, sample.class_names, out))
    lasso = lasso_section(state["model"], config, out)
    if lasso is not None:
        sections.append(lasso)
    return write_page(f"selfsup inspect: {loaded.name}", sections, out / "report.html")
