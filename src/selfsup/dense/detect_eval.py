"""`selfsup eval detect`: fine-tune Faster R-CNN + FPN on a backbone, score mAP on held-out
images, once per seed.

mAP comes from torchmetrics' `MeanAveragePrecision` (pycocotools backend): `map_50` is AP at
IoU 0.5 (VOC's criterion, with COCO's 101-point interpolation), `map` COCO's AP averaged over
IoU 0.50:0.05:0.95. Each seed starts from the same backbone weights (those RUN names) with a
fresh detector head and its own batch order; the spread across seeds is the noise floor any
comparison between backbones has to clear.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from selfsup.config import ConfigError
from selfsup.data import views as V
from selfsup.data.trunk_input import TrunkInput
from selfsup.dense.decoder import pick_layers
from selfsup.dense.detection_data import DetectionSet, decode
from selfsup.dense.detector import faster_rcnn
from selfsup.dense.metrics import mean_and_std
from selfsup.dense.settings import DetectSettings
from selfsup.metrics import NonFiniteLossError
from selfsup.runs import LoadedBackbone
from selfsup.runtime import resolve_device

REPORTED = ("map", "map_50", "map_75", "mar_100")


def training_target(target: dict) -> dict:
    """Boxes the detector learns from: no crowd/difficult boxes, none thinner than a pixel;
    labels shifted by one because torchvision reserves 0 for the background."""
    boxes = target["boxes"]
    keep = (
        (target["iscrowd"] == 0)
        & (boxes[:, 2] - boxes[:, 0] >= 1)
        & (boxes[:, 3] - boxes[:, 1] >= 1)
    )
    return {"boxes": boxes[keep], "labels": target["labels"][keep] + 1}


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def to_model_input(image: torch.Tensor, trunk_input: TrunkInput) -> torch.Tensor:
    """(3, h, w) uint8 -> float [0, 1] in the trunk's colour mode; the detector normalises it
    itself (with the same mean and std)."""
    return trunk_input.convert(V.to_float(image[None]))[0]


def learning_rate(step: int, settings: DetectSettings) -> float:
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def sample_batch(
    images: list[torch.Tensor],
    targets: list[dict],
    batch_size: int,
    generator: torch.Generator,
    trunk_input: TrunkInput,
    device: torch.device,
) -> tuple[list[torch.Tensor], list[dict]]:
    """Random images (with replacement), each flipped left-right with probability 1/2."""
    rows = torch.randint(len(images), (batch_size,), generator=generator).tolist()
    batch_images, batch_targets = [], []
    for row in rows:
        image, target = images[row], training_target(targets[row])
        if torch.rand((), generator=generator) < 0.5:
            image, target = hflip(image, target)
        batch_images.append(to_model_input(image, trunk_input).to(device))
        batch_targets.append({k: v.to(device) for k, v in target.items()})
    return batch_images, batch_targets


def train_detector(
    model, trunk_input, images, targets, settings, seed, device, progress
) -> list[float]:
    """`settings.steps` SGD steps on random batches with random horizontal flips."""
    generator = torch.Generator().manual_seed(seed)
    backbone = list(model.backbone.body.parameters())
    backbone_ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in backbone_ids]
    groups = [
        {"params": rest, "scale": 1.0},
        {"params": backbone, "scale": settings.backbone_lr_scale},
    ]
    optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    losses = []
    bar = tqdm(range(settings.steps), desc=f"detector seed {seed}", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings) * group["scale"]
        batch_images, batch_targets = sample_batch(
            images, targets, settings.batch_size, generator, trunk_input, device
        )
        loss = sum(model(batch_images, batch_targets).values())  # RPN + box head losses
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"detection loss became {float(loss)} at step {step} (seed {seed}); "
                "try a lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


@torch.no_grad()
def predict(model, trunk_input, images, device, batch_size: int = 8) -> list[dict]:
    """Detections per image on the CPU, labels back to class indices (background removed)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = [
            to_model_input(im, trunk_input).to(device) for im in images[start : start + batch_size]
        ]
        for det in model(batch):
            out.append(
                {
                    "boxes": det["boxes"].cpu(),
                    "scores": det["scores"].cpu(),
                    "labels": det["labels"].cpu() - 1,
                }
            )
    return out


def require_map_backend() -> None:
    """Fail before any training when the mAP backend is missing, not after minutes of it."""
    import importlib.util

    if importlib.util.find_spec("pycocotools") is None:
        raise ConfigError(
            "eval detect scores COCO mAP with pycocotools, which is not installed: "
            "pip install pycocotools"
        )


def mean_average_precision(predictions: list[dict], targets: list[dict]) -> dict:
    """COCO-style scores from torchmetrics (pycocotools): map, map_50, map_75, mar_100 ..."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update(predictions, targets)
    scores = metric.compute()
    return {k: float(v) for k, v in scores.items() if k != "classes" and v.numel() == 1}


@dataclass
class DecodedSplit:
    images: list[torch.Tensor]  # (3, h, w) uint8, longer side = settings.size
    targets: list[dict]  # boxes (K, 4) pixels, labels (K,), iscrowd (K,)


def one_seed(loaded, layers, num_classes, train, test, settings, seed, device, progress) -> tuple:
    """Fine-tune a fresh detector on a copy of the backbone; (scores, test predictions)."""
    torch.manual_seed(seed)  # the detector's fresh layers
    backbone = copy.deepcopy(loaded.backbone)  # every seed starts from the same weights
    model = faster_rcnn(backbone, layers, num_classes, settings.size, settings.fpn_channels)
    model.to(device)
    losses = train_detector(
        model, loaded.input, train.images, train.targets, settings, seed, device, progress
    )
    predictions = predict(model, loaded.input, test.images, device)
    scores = mean_average_precision(predictions, test.targets)
    if progress:
        print(
            f"  {loaded.name} seed {seed}: mAP@0.5 {scores['map_50']:.3f}, "
            f"mAP@[.5:.95] {scores['map']:.3f}",
            flush=True,
        )
    return {"seed": seed, "final_train_loss": losses[-1] if losses else None, **scores}, predictions


def run_detect_eval(
    loaded: LoadedBackbone,
    train: DetectionSet,
    test: DetectionSet,
    settings: DetectSettings,
    device: str = "auto",
    progress: bool = True,
    grid_path: Path | None = None,
) -> dict:
    """Fine-tune and score once per seed; a JSON-ready result with mean and std over seeds."""
    from selfsup.dense.figures import detection_grid

    require_map_backend()
    started = time.perf_counter()
    train_split = DecodedSplit(*decode(train, settings.size, progress))
    test_split = DecodedSplit(*decode(test, settings.size, progress))
    layers = settings.layers or pick_layers(loaded.backbone, settings.size, 3)
    torch_device = resolve_device(device)
    runs = []
    for seed in settings.seeds:
        scores, predictions = one_seed(
            loaded, layers, len(train.class_names), train_split, test_split, settings, seed,
            torch_device, progress,
        )  # fmt: skip
        runs.append(scores)
        if grid_path is not None and seed == settings.seeds[0]:
            shown = range(min(4, len(test_split.images)))
            detection_grid(
                [test_split.images[i] for i in shown],
                [predictions[i] for i in shown],
                [test_split.targets[i] for i in shown],
                train.class_names,
                grid_path,
            )
    result = {
        "protocol": "detect",
        "model": loaded.name,
        "source": loaded.source,
        "step": loaded.step,
        "data": train.name,
        "test_data": test.name,
        "layout": train.layout,
        "num_train": len(train.items),
        "num_test": len(test.items),
        "num_classes": len(train.class_names),
        "layers": layers,
        "detector": "torchvision FasterRCNN + FPN (no pretrained weights)",
        "metric": "torchmetrics MeanAveragePrecision (pycocotools backend)",
        "settings": asdict(settings),
        "seeds": runs,
        "summary": {key: mean_and_std([run[key] for run in runs]) for key in REPORTED},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if grid_path is not None:
        result["grid"] = str(grid_path)
    return result
