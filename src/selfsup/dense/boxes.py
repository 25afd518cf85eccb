"""Box label parsers: YOLO txt, COCO json, PASCAL VOC xml -> boxes in one convention.

Every parser returns boxes as (K, 4) float32 `x0, y0, x1, y1` in pixels of the original image,
with 0 at the image's left/top edge and x1, y1 the far edge of the box (so a box covering
pixels 0..9 is [0, 10]):
- YOLO: `class cx cy w h` normalised to [0, 1] (a polygon `class x1 y1 x2 y2 ...` from a
  segmentation label becomes its bounding box);
- COCO: `bbox` = [x, y, width, height] in pixels; `iscrowd` regions become crowd boxes;
- VOC: 1-based inclusive pixel indices `xmin..xmax`, so x0 = xmin - 1 and x1 = xmax (as
  detectron2 reads them); `difficult` objects become crowd boxes.
Crowd boxes are never trained on and are ignored by the metric (COCO's rule for crowd regions,
VOC's for difficult objects).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data import DataFormatError


@dataclass
class BoxLabels:
    boxes: np.ndarray  # (K, 4) float32 x0, y0, x1, y1 pixels
    labels: np.ndarray  # (K,) int64 class index into the data set's class names
    crowd: np.ndarray  # (K,) bool: ignored by training and the metric

    @staticmethod
    def from_lists(boxes: list, labels: list, crowd: list | None = None) -> BoxLabels:
        return BoxLabels(
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int64),
            np.asarray(crowd if crowd is not None else [False] * len(labels), bool),
        )


def parse_yolo(text: str, width: int, height: int, name: str) -> BoxLabels:
    """YOLO txt of an image `width` x `height` px -> BoxLabels (class ids as written)."""
    boxes, labels = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError as err:
            raise DataFormatError(f"{name}:{line_number}: not numbers: {line!r}") from err
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 7 and len(values) % 2 == 1:  # polygon: its bounding box
            xs, ys = values[1::2], values[2::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise DataFormatError(
                f"{name}:{line_number}: expected `class cx cy w h` (normalised), got {line!r}"
            )
        labels.append(int(values[0]))
        boxes.append([x0 * width, y0 * height, x1 * width, y1 * height])
    return BoxLabels.from_lists(boxes, labels)


def parse_voc(path: Path) -> tuple[str, tuple[int, int] | None, list[tuple[str, list, bool]]]:
    """A VOC annotation -> (image file name, (width, height) or None, [(class, box, difficult)])."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataFormatError(f"{path}: not valid XML ({err})") from err
    size = root.find("size")
    shape = None
    if size is not None and size.findtext("width"):
        shape = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None or not obj.findtext("name"):
            raise DataFormatError(f"{path}: an <object> without <name> or <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (
                float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except (TypeError, ValueError) as err:  # a coordinate missing, or not a number
            raise DataFormatError(
                f"{path}: a <bndbox> needs numbers xmin, ymin, xmax and ymax"
            ) from err
        difficult = obj.findtext("difficult", "0").strip() == "1"
        objects.append((obj.findtext("name").strip(), [xmin - 1, ymin - 1, xmax, ymax], difficult))
    return root.findtext("filename", path.stem + ".jpg").strip(), shape, objects


def parse_coco(data: dict, name: str) -> tuple[list[str], list[tuple[str, BoxLabels]]]:
    """A COCO instances json -> (class names, [(file_name, BoxLabels)] sorted by file name).

    Category ids need not be contiguous: class index = rank of the id among the categories.
    """
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
        raise DataFormatError(
            f"{name}: a COCO json needs an object with images, annotations and categories"
        )
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in categories]
        images = sorted(data["images"], key=lambda im: str(im["file_name"]))
        per_image: dict[int, tuple[list, list, list]] = {im["id"]: ([], [], []) for im in images}
    except (KeyError, TypeError) as err:
        raise DataFormatError(
            f"{name}: every image needs `id` and `file_name`, every category `id` and `name` "
            f"({type(err).__name__}: {err})"
        ) from err
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= ann.keys():
            raise DataFormatError(
                f"{name}: annotation {ann.get('id') if isinstance(ann, dict) else ann!r} needs "
                "image_id, category_id and bbox"
            )
        if ann["image_id"] not in per_image or ann["category_id"] not in index_of:
            raise DataFormatError(
                f"{name}: annotation {ann.get('id')} names an unknown image or category"
            )
        if not isinstance(ann["bbox"], list) or len(ann["bbox"]) != 4:
            raise DataFormatError(
                f"{name}: annotation {ann.get('id')}: bbox must be [x, y, width, height]"
            )
        x, y, w, h = ann["bbox"]
        boxes, labels, crowd = per_image[ann["image_id"]]
        boxes.append([x, y, x + w, y + h])
        labels.append(index_of[ann["category_id"]])
        crowd.append(bool(ann.get("iscrowd", 0)))
    return names, [(im["file_name"], BoxLabels.from_lists(*per_image[im["id"]])) for im in images]
