"""Detection data sets: which layout a path is, its images with boxes, decoded and resized.

Layouts (detected from the path):
- YOLO (COCO128, Ultralytics): `images/**/X.jpg` with `labels/**/X.txt` at the same relative
  path; class names from `classes.txt` (or `classes.names`), one per line; an image without a
  label file has no objects;
- COCO: an instances `.json`; images next to it, in `images/` beside it, or in --images;
- VOC: a folder with `Annotations/*.xml` and `JPEGImages/`.

Images are kept in file order (sorted names), so splitting by index is reproducible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from selfsup.data import DataFormatError
from selfsup.data.decode import open_image
from selfsup.data.sources import IMAGE_SUFFIXES
from selfsup.dense.boxes import BoxLabels, parse_coco, parse_voc, parse_yolo
from selfsup.dense.rgbd import resize_rgb


@dataclass
class DetectionSet:
    name: str
    layout: str  # yolo | coco | voc
    class_names: list[str]
    items: list[tuple[Path, BoxLabels]]  # (image file, boxes in its original pixels)

    def subset(self, rows: list[int]) -> DetectionSet:
        return DetectionSet(self.name, self.layout, self.class_names, [self.items[r] for r in rows])


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: cannot be opened as an image ({err})") from err


def read_class_names(root: Path) -> list[str] | None:
    for candidate in ("classes.txt", "classes.names", "obj.names"):
        if (root / candidate).is_file():
            return [line.strip() for line in (root / candidate).read_text().splitlines() if line]
    return None


def open_yolo(root: Path) -> DetectionSet:
    images = sorted(f for f in (root / "images").rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    items = []
    for image in images:
        label = root / "labels" / image.relative_to(root / "images").with_suffix(".txt")
        text = label.read_text() if label.is_file() else ""
        items.append((image, parse_yolo(text, *image_size(image), str(label))))
    largest = max((int(b.labels.max()) for _, b in items if len(b.labels)), default=-1)
    names = read_class_names(root) or [str(i) for i in range(largest + 1)]
    if largest >= len(names):
        raise DataFormatError(f"{root}: class id {largest} but only {len(names)} class names")
    return DetectionSet(str(root), "yolo", names, items)


def open_coco(path: Path, images_dir: Path | None) -> DetectionSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text, as JSON must be ({err})") from err
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from err
    names, labelled = parse_coco(data, str(path))
    folders = [images_dir] if images_dir else [path.parent, path.parent / "images"]
    items = []
    for file_name, boxes in labelled:
        found = [folder / file_name for folder in folders if (folder / file_name).is_file()]
        if not found:
            raise DataFormatError(
                f"{path}: image {file_name} not found in {', '.join(map(str, folders))} "
                "(use --images DIR)"
            )
        items.append((found[0], boxes))
    return DetectionSet(str(path), "coco", names, items)


def open_voc(root: Path) -> DetectionSet:
    parsed = [parse_voc(xml) for xml in sorted((root / "Annotations").glob("*.xml"))]
    names = sorted({obj[0] for _, _, objects in parsed for obj in objects})
    index_of = {name: i for i, name in enumerate(names)}
    items = []
    for file_name, _, objects in parsed:
        boxes = [box for _, box, _ in objects]
        labels = [index_of[name] for name, _, _ in objects]
        crowd = [difficult for _, _, difficult in objects]
        items.append((root / "JPEGImages" / file_name, BoxLabels.from_lists(boxes, labels, crowd)))
    return DetectionSet(str(root), "voc", names, items)


def open_detection(path: str | Path, images_dir: str | Path | None = None) -> DetectionSet:
    """Detect the layout of `path` and read its labels, or raise DataFormatError."""
    path = Path(path)
    if path.suffix.lower() == ".json" and path.is_file():
        dataset = open_coco(path, Path(images_dir) if images_dir else None)
    elif (path / "Annotations").is_dir():
        dataset = open_voc(path)
    elif (path / "images").is_dir() and (path / "labels").is_dir():
        dataset = open_yolo(path)
    else:
        raise DataFormatError(
            f"{path}: not a detection data set; expected a YOLO folder (images/ + labels/), a "
            "COCO instances .json, or a VOC folder (Annotations/ + JPEGImages/)"
        )
    if not dataset.items:
        raise DataFormatError(f"{path}: holds no labelled images")
    return dataset


def split_by_index(dataset: DetectionSet, train_fraction: float) -> tuple[DetectionSet, ...]:
    """First `train_fraction` of the images (file order) to train on, the rest to test."""
    cut = round(len(dataset.items) * train_fraction)
    if not 0 < cut < len(dataset.items):
        raise DataFormatError(
            f"{dataset.name}: {len(dataset.items)} images cannot be split {train_fraction:g} / "
            f"{1 - train_fraction:g} with images on both sides"
        )
    rows = list(range(len(dataset.items)))
    return dataset.subset(rows[:cut]), dataset.subset(rows[cut:])


def decode(
    dataset: DetectionSet, size: int, progress: bool = True
) -> tuple[list[torch.Tensor], list[dict]]:
    """Images with the longer side resized to `size` px ((3, h, w) uint8) and their targets
    ({"boxes" (K, 4) float32 pixels of the resized image, "labels" (K,) int64, "iscrowd"})."""
    images, targets = [], []
    for path, labels in tqdm(dataset.items, desc=f"{Path(dataset.name).name} images",
                             disable=not progress):  # fmt: skip
        rgb = open_image(path, str(path))
        height, width = rgb.shape[:2]
        scale = size / max(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        images.append(resize_rgb(rgb, shape))
        factors = np.array([shape[1] / width, shape[0] / height] * 2, np.float32)
        limits = np.array([shape[1], shape[0]] * 2, np.float32)
        boxes = np.clip(labels.boxes * factors, 0, limits)  # labels may overhang by rounding
        targets.append(
            {
                "boxes": torch.from_numpy(boxes),
                "labels": torch.from_numpy(labels.labels),
                "iscrowd": torch.from_numpy(labels.crowd.astype(np.int64)),
            }
        )
    return images, targets
