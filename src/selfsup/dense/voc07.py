"""`selfsup eval voc07`: PASCAL VOC 2007 multi-label classification by fine-tuning.

The papers' classification transfer (the protocol of Krähenbühl et al. 2016, which the
counting and multi-task papers report): the whole network is fine-tuned with a linear head
on its globally pooled final map and a per-class sigmoid (binary cross-entropy), then scored
by the mean over classes of VOC 2007's average precision.

- **Labels.** An image is positive for a class with a non-difficult object of it, negative
  without any object of it, and left out of that class (neither) when its only objects of the
  class are marked difficult, as the VOC devkit does.
- **AP.** VOC 2007's 11-point interpolated AP: the mean, over recall r in 0, 0.1, ..., 1, of
  the best precision at a recall of at least r. Also reported: the non-interpolated AP (the
  area under the precision-recall steps), which later VOC years use.
- **Data.** A VOC folder (`Annotations/*.xml`, `JPEGImages/`); its split comes from
  `ImageSets/Main/trainval.txt` and `test.txt` when present, else from `--test` or the
  first `--train-fraction` of the images.
- **Training.** Random-resized crops (area 0.3-1) and flips of the images brought to
  `size` (shorter side, centre crop); SGD with momentum 0.9, cosine schedule. Test scores
  average the image and its mirror.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from selfsup.data import views as V
from selfsup.data.decode import fit_to_square, open_image
from selfsup.dense.detection_data import DetectionSet, open_voc, split_by_index
from selfsup.dense.settings import Voc07Settings
from selfsup.metrics import NonFiniteLossError
from selfsup.runs import LoadedBackbone
from selfsup.runtime import resolve_device


@dataclass
class MultiLabelImages:
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N, C) float 0/1
    counted: torch.Tensor  # (N, C) bool: False where only difficult objects of the class


def multi_labels(dataset: DetectionSet, size: int, progress: bool) -> MultiLabelImages:
    """The images of a detection set at `size` px, with image-level labels from its boxes."""
    classes = len(dataset.class_names)
    images, labels, counted = [], np.zeros((len(dataset.items), classes)), []
    for row, (path, boxes) in enumerate(
        tqdm(dataset.items, desc=f"{Path(dataset.name).name} images", disable=not progress)
    ):
        images.append(fit_to_square(open_image(path, str(path)), size, str(path)))
        present = np.zeros(classes, bool)
        only_difficult = np.zeros(classes, bool)
        for label, difficult in zip(boxes.labels, boxes.crowd):
            if difficult:
                only_difficult[label] = not present[label]
            else:
                present[label], only_difficult[label] = True, False
        labels[row] = present
        counted.append(~only_difficult)
    return MultiLabelImages(
        torch.stack(images), torch.from_numpy(labels).float(), torch.from_numpy(np.stack(counted))
    )


def voc07_average_precision(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(11-point interpolated AP, non-interpolated AP) of one class: `scores` (N,) and
    `positive` (N,) bool over the images counted for it."""
    if not positive.any():
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / hits.sum()
    eleven = np.mean([precision[recall >= r].max(initial=0.0) for r in np.linspace(0, 1, 11)])
    exact = float(np.sum(precision[hits]) / hits.sum())
    return float(eleven), exact


def scores_of(model: nn.Module, prepare, images: torch.Tensor, device, batch: int) -> np.ndarray:
    """(N, C) sigmoid scores, each the mean of the image's and its mirror's."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = prepare(images[start : start + batch]).to(device)
            logits = model(x) + model(x.flip(-1))
            out.append(torch.sigmoid(logits.float() / 2).cpu())
    return torch.cat(out).numpy()


class Classifier(nn.Module):
    """Backbone, global average pool, linear layer: one logit per class."""

    def __init__(self, backbone: nn.Module, channels: int, classes: int):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


def fine_tune(
    loaded: LoadedBackbone, train: MultiLabelImages, settings: Voc07Settings, device, progress
) -> tuple[Classifier, list[float]]:
    torch.manual_seed(settings.seed)
    backbone = copy.deepcopy(loaded.backbone)
    model = Classifier(backbone, backbone.num_features, train.labels.shape[1]).to(device)
    groups = [
        {"params": model.head.parameters(), "scale": 1.0},
        {"params": model.backbone.parameters(), "scale": settings.backbone_lr_scale},
    ]
    optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    model.train()
    for step in tqdm(range(settings.steps), desc="voc07 fine-tune", disable=not progress):
        for group in optimizer.param_groups:  # cosine decay to zero
            group["lr"] = (
                settings.lr * group["scale"] * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
            )
        rows = torch.randint(len(train.images), (settings.batch_size,), generator=generator)
        x = V.random_resized_crop(train.images[rows], settings.size, generator, scale=(0.3, 1.0))
        x = loaded.input.prepare(V.random_hflip(x, 0.5, generator)).to(device)
        logits = model(x).float()
        terms = F.binary_cross_entropy_with_logits(
            logits, train.labels[rows].to(device), reduction="none"
        )
        counted = train.counted[rows].to(device)
        loss = (terms * counted).sum() / counted.sum().clamp(min=1)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"voc07: the loss became {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return model, losses


def voc_splits(path: str, test: str | None, train_fraction: float) -> tuple[DetectionSet, ...]:
    """(train, test): --test, else the folder's ImageSets/Main trainval / test lists, else the
    first `train_fraction` of its images."""
    data = open_voc(Path(path))
    if test:
        return data, open_voc(Path(test))
    lists = Path(path) / "ImageSets" / "Main"
    if (lists / "trainval.txt").is_file() and (lists / "test.txt").is_file():
        rows_of = {p.stem: i for i, (p, _) in enumerate(data.items)}

        def listed(name: str) -> list[int]:
            stems = (lists / name).read_text().split()
            return [rows_of[stem] for stem in stems if stem in rows_of]

        return data.subset(listed("trainval.txt")), data.subset(listed("test.txt"))
    return split_by_index(data, train_fraction)


def run_voc07_eval(
    loaded: LoadedBackbone,
    train_set: DetectionSet,
    test_set: DetectionSet,
    settings: Voc07Settings,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Fine-tune on `train_set`, score on `test_set`; a JSON-ready result."""
    started = time.perf_counter()
    torch_device = resolve_device(device)
    train = multi_labels(train_set, settings.size, progress)
    test = multi_labels(test_set, settings.size, progress)
    model, losses = fine_tune(loaded, train, settings, torch_device, progress)
    scores = scores_of(model, loaded.input.prepare, test.images, torch_device, settings.batch_size)
    per_class = {}
    for c, name in enumerate(train_set.class_names):
        kept = test.counted[:, c].numpy()
        eleven, exact = voc07_average_precision(scores[kept, c], test.labels[kept, c].numpy() > 0)
        per_class[name] = {"ap_11point": eleven, "ap": exact}
    scored = [v for v in per_class.values() if not math.isnan(v["ap"])]
    return {
        "protocol": "voc07",
        "model": loaded.name,
        "source": loaded.source,
        "step": loaded.step,
        "data": train_set.name,
        "test_data": test_set.name,
        "num_train": len(train.images),
        "num_test": len(test.images),
        "classes_scored": len(scored),
        "settings": asdict(settings),
        "final_train_loss": losses[-1] if losses else None,
        "map_11point": float(np.mean([v["ap_11point"] for v in scored])) if scored else None,
        "map": float(np.mean([v["ap"] for v in scored])) if scored else None,
        "per_class": per_class,
        "seconds": round(time.perf_counter() - started, 1),
    }
