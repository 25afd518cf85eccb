"""Evaluations end to end: labelled data in, frozen features per layer, a classifier, results.

Every protocol returns a JSON-ready dict with the model, the data, the settings and one row per
layer (`top1`, `top5`, ...), the shape `selfsup report` reads.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from selfsup.data import DataFormatError, decode_all, open_source
from selfsup.eval.knn import KnnSettings, weighted_knn
from selfsup.eval.linear import ProbeSettings, train_linear_probe
from selfsup.features import cached_features, fingerprint
from selfsup.outputs import default_cache_dir
from selfsup.runs import LoadedBackbone
from selfsup.runtime import resolve_device, resolve_precision


@dataclass
class LabelledImages:
    """Decoded images with labels, ready for feature extraction."""

    name: str
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    key: str = ""  # content fingerprint (feature-cache key)
    class_names: list[str] | None = None  # as the data names them (None: indices only)


def load_labelled(path: str, size: int, workers: int = 2, progress: bool = True) -> LabelledImages:
    """Decode a labelled dataset (ImageFolder tree or .npz with `labels`) at `size` px."""
    source = open_source(path)
    if source.labels is None:
        raise DataFormatError(
            f"{path}: evaluation needs labels (an ImageFolder tree or an .npz with a `labels` "
            "array)"
        )
    num_classes = len(source.class_names or []) or int(source.labels.max()) + 1
    present = np.unique(source.labels)
    if len(present) < 2:
        only = (source.class_names or [str(present[0])])[int(present[0])]
        raise DataFormatError(
            f"{path}: all images are in one class ({only}); evaluation needs two or more (an "
            "ImageFolder tree holds one sub-folder per class)"
        )
    decoded = decode_all(source, size, workers=workers, progress=progress)
    key = fingerprint([decoded.images, decoded.labels])
    names = list(source.class_names) if source.names_given else None
    return LabelledImages(str(path), decoded.images, decoded.labels, num_classes, key, names)


def align_classes(train: LabelledImages, test: LabelledImages) -> LabelledImages:
    """The test set with its labels in the training set's class order, when both name their
    classes (folders sorted differently, `class_names` listed in another order); refused when
    the names differ, or when a test class has no training image (no probe could predict
    it, and the accuracy would be silently capped)."""
    if train.class_names and test.class_names and train.class_names != test.class_names:
        only_test = [n for n in test.class_names if n not in train.class_names]
        only_train = [n for n in train.class_names if n not in test.class_names]
        if only_test or only_train:
            raise DataFormatError(
                f"{test.name}: its classes differ from {train.name}'s: only in the test set "
                f"{only_test or 'none'}, only in the training set {only_train or 'none'}"
            )
        order = torch.tensor([train.class_names.index(n) for n in test.class_names])
        labels = order[test.labels]
        test = replace(
            test,
            labels=labels,
            class_names=list(train.class_names),
            key=fingerprint([test.images, labels]),
        )
    untrained = sorted(set(test.labels.tolist()) - set(train.labels.tolist()))
    if untrained:
        names = [train.class_names[i] if train.class_names else str(i) for i in untrained]
        raise DataFormatError(
            f"{train.name}: no training image of class(es) {names}, which {test.name} has; a "
            "classifier trained on it could never predict them"
        )
    return test


def check_compatible(train: LabelledImages, test: LabelledImages) -> None:
    if train.num_classes != test.num_classes:
        raise DataFormatError(
            f"{train.name} has {train.num_classes} classes but {test.name} has {test.num_classes}"
        )
    if train.images.shape[-1] != test.images.shape[-1]:
        raise DataFormatError(f"{train.name} and {test.name} were decoded at different sizes")


def default_image_size(loaded: LoadedBackbone, fallback: int = 32) -> int:
    """Evaluate at the size the run's trunk was fed (its input record)."""
    return loaded.input.size or fallback


@dataclass
class EvalOptions:
    """How to run an evaluation (not what it measures)."""

    device: str = "auto"
    precision: str = "auto"
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # None: no cache
    batch_size: int = 256  # images per forward pass of fine-tuning's test pass
    feature_batch_size: int | None = None  # of feature extraction (None: 1024 GPU, 256 CPU)
    progress: bool = True


def frozen_features(
    loaded: LoadedBackbone,
    train: LabelledImages,
    test: LabelledImages,
    layers: list[str],
    max_dims: int,
    options: EvalOptions,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Pooled features of `layers` for both splits, from the cache when possible.

    They stay on the evaluation's device: the probes and kNN run where the features are.
    """
    check_compatible(train, test)
    # Only layers that trained; `lasso:<task>` layers through the run's lasso readout.
    backbone = loaded.reader(layers)
    device = resolve_device(options.device)
    common = {
        "trunk_input": loaded.input,
        "device": device,
        "amp_dtype": resolve_precision(options.precision, device),
        "max_dims": max_dims,
        "batch_size": options.feature_batch_size,
        "progress": options.progress,
        "cache_dir": options.cache_dir,
        "keep_on_device": True,
    }
    features = []
    for split in (train, test):
        desc = f"{loaded.name}: {Path(split.name).name} features"
        features.append(
            cached_features(backbone, split.images, layers, data_key=split.key, desc=desc, **common)
        )
    if device.type == "cuda":  # so that the callers' clocks time the extraction, not its launch
        torch.cuda.synchronize(device)
    return features[0], features[1]


def describe(loaded: LoadedBackbone, train: LabelledImages, test: LabelledImages) -> dict:
    return {
        "model": loaded.name,
        "source": loaded.source,
        "step": loaded.step,
        "image_size": int(train.images.shape[-1]),
        "train_data": train.name,
        "test_data": test.name,
        "num_train": len(train.labels),
        "num_test": len(test.labels),
    }


def probe_layers(
    protocol: str,
    probe,
    loaded: LoadedBackbone,
    train: LabelledImages,
    test: LabelledImages,
    layers: list[str],
    settings,
    max_dims: int,
    options: EvalOptions,
) -> dict:
    """Fit `probe(train_x, train_y, test_x, test_y, num_classes, settings)` on the frozen
    features of each layer; the protocol's results with one row per layer."""
    started = time.perf_counter()
    train_f, test_f = frozen_features(loaded, train, test, layers, max_dims, options)
    extracted = time.perf_counter()
    rows = []
    for layer in layers:
        result = probe(
            train_f[layer], train.labels, test_f[layer], test.labels, train.num_classes, settings
        )
        rows.append({"layer": layer, **asdict(result)})
        if options.progress:
            label = {"knn": "kNN"}.get(protocol, protocol)
            print(f"  {loaded.name} {layer}: {label} top-1 {100 * result.top1:.1f}%", flush=True)
    return {
        "protocol": protocol,
        **describe(loaded, train, test),
        "settings": asdict(settings),
        "max_dims": max_dims,
        "feature_seconds": round(extracted - started, 1),
        "probe_seconds": round(time.perf_counter() - extracted, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "layers": rows,
    }


def linear_eval(
    loaded: LoadedBackbone,
    train: LabelledImages,
    test: LabelledImages,
    *,
    layers: list[str] | None = None,
    settings: ProbeSettings | None = None,
    max_dims: int = 4096,
    options: EvalOptions | None = None,
) -> dict:
    """Per-layer linear probe of a frozen backbone (default: its probe layers that trained)."""
    layers = layers or loaded.probe_layers
    settings = settings or ProbeSettings()
    return probe_layers(
        "linear", train_linear_probe, loaded, train, test, layers, settings, max_dims,
        options or EvalOptions(),
    )  # fmt: skip


def knn_eval(
    loaded: LoadedBackbone,
    train: LabelledImages,
    test: LabelledImages,
    *,
    layers: list[str] | None = None,
    settings: KnnSettings | None = None,
    options: EvalOptions | None = None,
) -> dict:
    """Weighted kNN on globally pooled features of each layer (default: the deepest that
    trained, the final one but in a lasso run)."""
    layers = layers or [loaded.final_layer]
    settings = settings or KnnSettings()
    return probe_layers(
        "knn", weighted_knn, loaded, train, test, layers, settings, 0, options or EvalOptions()
    )
