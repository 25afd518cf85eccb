"""An evaluation end to end: labelled data in, features per layer, probes, results out."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from selfsup.data import DataFormatError, DecodedImages, decode_all, open_source
from selfsup.eval.features import extract_features
from selfsup.eval.linear import ProbeResult, ProbeSettings, result_rows, train_linear_probe
from selfsup.runs import LoadedBackbone
from selfsup.runtime import resolve_device, resolve_precision


@dataclass
class LabelledImages:
    """Decoded images with labels, ready for feature extraction."""

    name: str
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    num_classes: int


def load_labelled(path: str, size: int, workers: int = 2, progress: bool = True) -> LabelledImages:
    """Decode a labelled dataset (ImageFolder tree or .npz with `labels`) at `size` px."""
    source = open_source(path)
    if source.labels is None:
        raise DataFormatError(
            f"{path}: evaluation needs labels (an ImageFolder tree or an .npz "
            "with a `labels` array)"
        )
    decoded: DecodedImages = decode_all(source, size, workers=workers, progress=progress)
    num_classes = len(source.class_names or []) or int(source.labels.max()) + 1
    return LabelledImages(str(path), decoded.images, decoded.labels, num_classes)


def default_image_size(loaded: LoadedBackbone, fallback: int = 32) -> int:
    """Evaluate at the size the run's images were stored at (its data.image_size)."""
    return int(loaded.config.get("data", {}).get("image_size", fallback))


def linear_probe_layers(
    loaded: LoadedBackbone,
    train: LabelledImages,
    test: LabelledImages,
    *,
    layers: list[str] | None = None,
    settings: ProbeSettings | None = None,
    device: str = "auto",
    precision: str = "auto",
    max_dims: int = 4096,
    progress: bool = True,
) -> dict:
    """Per-layer linear probe of a frozen backbone; returns a JSON-ready results dict."""
    if train.num_classes != test.num_classes:
        raise DataFormatError(
            f"{train.name} has {train.num_classes} classes but {test.name} has {test.num_classes}"
        )
    settings = settings or ProbeSettings()
    torch_device = resolve_device(device)
    amp_dtype = resolve_precision(precision, torch_device)
    layers = layers or list(loaded.backbone.probe_layers)
    unknown = [layer for layer in layers if layer not in loaded.backbone.layer_channels]
    if unknown:
        raise ValueError(
            f"unknown layers {unknown}; this backbone has {', '.join(loaded.backbone.layer_names)}"
        )
    started = time.perf_counter()
    common = {
        "layers": layers,
        "device": torch_device,
        "amp_dtype": amp_dtype,
        "max_dims": max_dims,
        "progress": progress,
    }
    train_features = extract_features(
        loaded.backbone, train.images, **common, desc=f"{loaded.name}: train features"
    )
    test_features = extract_features(
        loaded.backbone, test.images, **common, desc=f"{loaded.name}: test features"
    )
    results: dict[str, ProbeResult] = {}
    for layer in layers:
        results[layer] = train_linear_probe(
            train_features[layer],
            train.labels,
            test_features[layer],
            test.labels,
            train.num_classes,
            settings,
        )
        if progress:
            print(f"  {loaded.name} {layer}: top-1 {100 * results[layer].top1:.1f}%")
    return {
        "protocol": "linear",
        "model": loaded.name,
        "source": loaded.source,
        "step": loaded.step,
        "image_size": int(train.images.shape[-1]),
        "train_data": train.name,
        "test_data": test.name,
        "num_train": len(train.labels),
        "num_test": len(test.labels),
        "settings": asdict(settings),
        "max_dims": max_dims,
        "seconds": round(time.perf_counter() - started, 1),
        "layers": result_rows(results),
    }


def results_by_layer(result: dict) -> dict[str, ProbeResult]:
    """Inverse of `result_rows` for one results dict (for tables)."""
    return {
        row["layer"]: ProbeResult(**{k: v for k, v in row.items() if k != "layer"})
        for row in result["layers"]
    }
