"""`selfsup eval voc07`: VOC 2007 multi-label classification by fine-tuning."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.dense.detection_data import open_voc
from selfsup.dense.voc07 import multi_labels, voc07_average_precision
from tests.conftest import real_data_dir


def test_average_precision_by_hand_and_against_scikit_learn():
    """Ranks hit, miss, hit, miss: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1. The
    11-point AP takes the best precision at recall >= 0, 0.1, ..., 1: six points of 1 and
    five of 2/3; the exact AP averages the precision at each hit: (1 + 2/3) / 2."""
    eleven, exact = voc07_average_precision(
        np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
    )
    assert eleven == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert exact == pytest.approx((1 + 2 / 3) / 2)
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    scores, positive = rng.random(200), rng.random(200) < 0.3
    assert voc07_average_precision(scores, positive)[1] == pytest.approx(
        average_precision_score(positive, scores)
    )
    assert np.isnan(voc07_average_precision(scores, np.zeros(200, bool))[0])


def voc_annotation(name: str, size: tuple[int, int], objects: list[tuple]) -> str:
    """A VOC XML file: objects are (class, xmin, ymin, xmax, ymax, difficult) in pixels."""
    parts = "".join(
        f"<object><name>{c}</name><difficult>{int(d)}</difficult><bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for c, x0, y0, x1, y1, d in objects
    )
    width, height = size
    return (
        f"<annotation><filename>{name}</filename><size><width>{width}</width><height>"
        f"{height}</height><depth>3</depth></size>{parts}</annotation>"
    )


def write_voc(root: Path, images: dict[str, tuple[np.ndarray, list[tuple]]]) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem, (pixels, objects) in images.items():
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{stem}.jpg")
        text = voc_annotation(f"{stem}.jpg", pixels.shape[1::-1], objects)
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    return root


def test_labels_come_from_the_boxes_and_difficult_only_classes_are_left_out(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    root = write_voc(
        tmp_path / "voc",
        {
            "a": (pixels, [("cat", 1, 1, 20, 20, False), ("dog", 5, 5, 30, 30, True)]),
            "b": (pixels, [("dog", 1, 1, 20, 20, False), ("dog", 2, 2, 9, 9, True)]),
            "c": (pixels, [("bird", 1, 1, 10, 10, False)]),
        },
    )
    data = open_voc(root)
    assert data.class_names == ["bird", "cat", "dog"]
    labelled = multi_labels(data, 16, progress=False)
    assert labelled.images.shape == (3, 3, 16, 16)
    assert labelled.labels.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    # a's dog is only difficult: neither positive nor negative for dog; b has a clear dog.
    assert labelled.counted.tolist() == [[True, True, False], [True, True, True], [True] * 3]


def coco128_as_voc(root: Path, out: Path) -> Path:
    """The COCO128 images and boxes (YOLO layout) rewritten in VOC's layout, with
    ImageSets/Main trainval (the first 96 images) and test (the other 32) lists."""
    names = (root / "classes.txt").read_text().split("\n")
    images = {}
    for path in sorted((root / "images").rglob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        height, width = pixels.shape[:2]
        label_file = root / "labels" / path.parent.name / f"{path.stem}.txt"
        objects = []
        for line in label_file.read_text().splitlines() if label_file.is_file() else []:
            c, x, y, w, h = map(float, line.split())
            box = (
                (x - w / 2) * width,
                (y - h / 2) * height,
                (x + w / 2) * width,
                (y + h / 2) * height,
            )
            objects.append((names[int(c)].strip(), *(round(v) + 1 for v in box), False))
        images[path.stem] = (pixels, objects)
    voc = write_voc(out, images)
    lists = voc / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    stems = sorted(images)
    (lists / "trainval.txt").write_text("\n".join(stems[:96]) + "\n")
    (lists / "test.txt").write_text("\n".join(stems[96:]) + "\n")
    return voc


def test_eval_voc07_fine_tunes_and_scores_a_voc_layout_made_from_coco128(tmp_path, capsys):
    coco = real_data_dir() / "detection" / "coco128"
    if not (coco / "images").is_dir():
        pytest.skip(f"COCO128 not found under {coco.parent} (set SELFSUP_DATA)")
    voc = coco128_as_voc(coco, tmp_path / "VOC2007")
    out = tmp_path / "voc07.json"
    argv = ["eval", "voc07", "random:alexnet_small", "--data", str(voc), "--json", str(out),
            "--steps", "3", "--batch-size", "8", "--size", "64", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "voc07: mAP" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (result["num_train"], result["num_test"]) == (96, 32)
    assert 0 < result["classes_scored"] <= len(result["per_class"])
    assert 0 <= result["map_11point"] <= 1 and 0 <= result["map"] <= 1
    scored = [v for v in result["per_class"].values() if v["ap"] == v["ap"]]  # not NaN
    assert len(scored) == result["classes_scored"]
