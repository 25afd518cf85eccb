"""Dense evaluation: metrics, normals, invalid depth, RGB-D and box loaders, CLI smoke runs."""

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data import DataFormatError
from selfsup.dense.detect_eval import mean_average_precision
from selfsup.dense.detection_data import open_detection
from selfsup.dense.geometry import normals_from_depth
from selfsup.dense.losses import berhu, scale_invariant_log
from selfsup.dense.metrics import depth_metrics, normal_metrics
from selfsup.dense.rgbd import load_rgbd, split_by_index
from selfsup.train import train
from tests.helpers import needs_pycocotools, one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

K = np.array([[40.0, 0, 20], [0, 40.0, 16], [0, 0, 1]], np.float32)  # for 40x32 frames


# ---------------------------------------------------------------------------------------------
# Synthetic RGB-D data
# ---------------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_frame(index: int, height: int = 32, width: int = 40) -> tuple[np.ndarray, ...]:
    """A tilted plane whose colour encodes its depth; a few holes (0) and saturated (65535)."""
    v, u = np.mgrid[0:height, 0:width]
    depth_mm = (1000 + 20 * v + 10 * u + 30 * index).astype(np.uint16)
    depth_mm[2:4, 5:9] = 0
    depth_mm[20:22, 30:34] = 65535
    shade = (depth_mm.astype(np.float64) / 3000 * 255).clip(0, 255).astype(np.uint8)
    rgb = np.stack([shade, 255 - shade, np.full_like(shade, 128)], axis=2)
    return rgb, depth_mm


def pack(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def write_seven_scenes_npz(path, frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The packed 7-Scenes layout of shared/data/depth (see SOURCES.md)."""
    jpeg, offsets = pack([png_bytes(rgb) for rgb, _ in frames])  # PNG decodes like JPEG here
    depth_png, depth_offsets = pack([png_bytes(depth) for _, depth in frames])
    np.savez(
        path,
        jpeg=jpeg,
        offsets=offsets,
        depth_png=depth_png,
        depth_offsets=depth_offsets,
        depth_scale=np.float32(0.001),
        names=np.array([f"frame-{i:06d}" for i in range(len(frames))]),
        intrinsics=K,
    )


@pytest.fixture
def rgbd_npz(tmp_path):
    path = tmp_path / "scene.npz"
    write_seven_scenes_npz(path, [synthetic_frame(i) for i in range(10)])
    return path


# ---------------------------------------------------------------------------------------------
# Metrics and losses
# ---------------------------------------------------------------------------------------------


def test_depth_metrics_match_hand_computed_values():
    pred = torch.tensor([1.0, 1.5, 3.0, 100.0])
    target = torch.tensor([1.0, 1.0, 4.0, 0.0])  # the last pixel has no measurement
    m = depth_metrics(pred, target, target > 0)
    # ratios max(p/t, t/p): 1, 1.5, 4/3
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(1.0) and m["delta3"] == pytest.approx(1.0)
    assert m["abs_rel"] == pytest.approx((0 + 0.5 + 0.25) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 0.25 + 1.0) / 3))
    assert m["log10"] == pytest.approx((0 + math.log10(1.5) + math.log10(4 / 3)) / 3)
    assert m["pixels"] == 3


def rotated_about_y(degrees: float) -> list[float]:
    angle = math.radians(degrees)
    return [math.sin(angle), 0.0, -math.cos(angle)]


def test_normal_metrics_match_hand_computed_values():
    angles = [0.0, 10.0, 20.0, 25.0, 45.0, 90.0]  # the 90 degree pixel is invalid
    pred = torch.tensor([rotated_about_y(a) for a in angles]).T.reshape(1, 3, 1, 6)
    target = torch.tensor([rotated_about_y(0)] * 6).T.reshape(1, 3, 1, 6)
    valid = torch.tensor([[[True] * 5 + [False]]])
    m = normal_metrics(pred * 3.0, target, valid)  # lengths must not matter
    assert m["mean_deg"] == pytest.approx(20.0, abs=1e-6)
    assert m["median_deg"] == pytest.approx(20.0, abs=1e-6)
    assert m["within_11.25"] == pytest.approx(2 / 5)
    assert m["within_22.5"] == pytest.approx(3 / 5)
    assert m["within_30"] == pytest.approx(4 / 5)


def test_invalid_pixels_never_count_in_metrics_or_losses():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 8, 8, generator=generator) + 0.5
    target[:, :2] = 0.0  # no measurement
    pred = torch.rand(2, 8, 8, generator=generator) + 0.5
    valid = target > 0
    wild = pred.clone()
    wild[~valid] = 1e6  # whatever is predicted where there is no ground truth
    assert depth_metrics(pred, target, valid) == depth_metrics(wild, target, valid)
    for loss in (berhu, scale_invariant_log):
        assert torch.equal(loss(pred, target, valid), loss(wild, target, valid))


def test_berhu_is_l1_below_and_scaled_l2_above_the_threshold():
    pred, target = torch.tensor([[1.0, 2.0, 6.0]]), torch.tensor([[1.5, 2.0, 1.0]])
    c = 0.2 * 5.0  # a fifth of the largest error
    expected = (0.5 + 0.0 + (25 + c**2) / (2 * c)) / 3
    assert float(berhu(pred, target, torch.ones(1, 3, dtype=torch.bool))) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def test_normals_of_a_plane_are_the_plane_normal():
    normal = torch.tensor([0.3, -0.5, -0.8], dtype=torch.float64)
    normal = normal / normal.norm()
    offset = float(normal @ torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))  # n . p = d
    v, u = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)])
    depth = (offset / (normal.float() @ rays.reshape(3, -1))).reshape(1, 32, 40)
    assert (depth > 0).all()
    depth[0, 10, 10] = 0.0  # a hole: it and its four neighbours have no normal
    normals, valid = normals_from_depth(depth, torch.from_numpy(K))
    assert not valid[0, 0].any() and not valid[0, :, -1].any()  # borders
    assert not valid[0, 10, 10] and not valid[0, 10, 11] and not valid[0, 9, 10]
    assert valid.sum() == 30 * 38 - 5
    assert torch.allclose(
        normals[0][:, valid[0]].T, normal.float().expand(30 * 38 - 5, 3), atol=1e-4
    )


# ---------------------------------------------------------------------------------------------
# RGB-D loading
# ---------------------------------------------------------------------------------------------


def test_seven_scenes_npz_masks_zero_and_saturated_depth(rgbd_npz):
    frames = load_rgbd(rgbd_npz, 32, progress=False)  # full resolution: 32x40
    assert frames.images.shape == (10, 3, 32, 40) and not frames.registered
    assert not frames.valid[:, 2:4, 5:9].any() and not frames.valid[:, 20:22, 30:34].any()
    assert frames.valid.sum() == 10 * (32 * 40 - 16)
    assert float(frames.depth[0, 0, 0]) == pytest.approx(1.0)
    half = load_rgbd(rgbd_npz, 16, progress=False)  # 2x2 averaging of valid readings only
    assert half.images.shape[-2:] == (16, 20)
    assert float(half.depth[0, 10, 15]) == 0.0  # its 4 readings were all 65535
    expected = (1000 + 20 * 0.5 + 10 * 0.5) / 1000  # mean of the four valid readings
    assert float(half.depth[0, 0, 0]) == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(half.intrinsics[0, [0, 2]], torch.tensor([20.0, 9.75]))


def test_split_by_index_keeps_frame_order(rgbd_npz):
    train_frames, test_frames = split_by_index(load_rgbd(rgbd_npz, 16, progress=False), 0.8)
    assert train_frames.indices == list(range(8)) and test_frames.indices == [8, 9]
    with pytest.raises(DataFormatError, match="cannot be split"):
        split_by_index(train_frames.subset([0]), 0.8)


def test_loaders_reject_mismatched_rgb_and_depth_sizes(tmp_path):
    rgb, depth = synthetic_frame(0)
    folder = tmp_path / "pairs"
    for sub in ("rgb", "depth"):
        (folder / sub).mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "rgb" / "0001.png")
    Image.fromarray(depth[::2, ::2].copy()).save(folder / "depth" / "0001.png")
    with pytest.raises(DataFormatError, match=r"0001\.png.*RGB is 40x32 but depth is 20x16"):
        load_rgbd(folder, 16, progress=False)
    npz = tmp_path / "bad.npz"
    write_seven_scenes_npz(npz, [(rgb, depth), (rgb, depth[:, :20].copy())])
    with pytest.raises(DataFormatError, match=r"bad\.npz\[1\].*RGB is 40x32 but depth is 20x32"):
        load_rgbd(npz, 16, progress=False)


def test_folder_pairs_follow_common_naming_conventions(tmp_path):
    rgb, depth = synthetic_frame(0)
    for name in ("frame-000002.color.png", "frame-000010.color.png"):
        Image.fromarray(rgb).save(tmp_path / name)
        Image.fromarray(depth).save(tmp_path / name.replace("color", "depth"))
    Image.fromarray(rgb).save(tmp_path / "rgb_00005.jpg")
    Image.fromarray(depth).save(tmp_path / "sync_depth_00005.png")
    Image.fromarray(rgb).save(tmp_path / "unpaired.color.png")
    frames = load_rgbd(tmp_path, 32, progress=False)
    assert len(frames) == 3 and frames.intrinsics is None


def test_nyu_labelled_mat_is_read_in_image_orientation(tmp_path):
    h5py = pytest.importorskip("h5py")
    rgb, depth = synthetic_frame(0)
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:  # MATLAB v7.3 stores arrays transposed
        f["images"] = rgb.transpose(2, 1, 0)[None]  # (N, 3, W, H)
        f["depths"] = (depth.astype(np.float32) / 1000).T[None]  # (N, W, H) metres
    frames = load_rgbd(path, 32, progress=False)
    assert torch.equal(frames.images[0], torch.from_numpy(rgb).permute(2, 0, 1))
    assert float(frames.depth[0, 0, 1]) == pytest.approx(1.010)  # (v=0, u=1): 1000 + 10 mm
    assert frames.intrinsics is not None


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


@needs_pycocotools
def test_map_is_one_on_perfect_predictions_and_drops_with_shifted_boxes():
    boxes = [
        torch.tensor([[10.0, 10, 60, 60], [70, 20, 110, 90]]),
        torch.tensor([[5.0, 5, 45, 85]]),
    ]
    labels = [torch.tensor([0, 1]), torch.tensor([1])]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]

    def shifted(fraction: float) -> list[dict]:
        out = []
        for b, lab in zip(boxes, labels):
            moved = b.clone()
            moved[:, [0, 2]] += fraction * (b[:, 2:3] - b[:, 0:1])
            out.append({"boxes": moved, "labels": lab, "scores": torch.ones(len(lab))})
        return out

    perfect = mean_average_precision(shifted(0.0), targets)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0)
    # A shift of 20% of the width: IoU = 0.8 / 1.2 = 0.67, a hit at IoU 0.50..0.65 only.
    near = mean_average_precision(shifted(0.2), targets)
    assert near["map_50"] == pytest.approx(1.0) and near["map"] == pytest.approx(0.4, abs=0.01)
    # Half the width: IoU = 1/3, a miss at every threshold.
    far = mean_average_precision(shifted(0.5), targets)
    assert far["map_50"] == pytest.approx(0.0) and far["map"] == pytest.approx(0.0)


BOXES = {"cat": [4.0, 6.0, 20.0, 30.0], "dog": [30.0, 10.0, 60.0, 40.0]}  # x0 y0 x1 y1 pixels


def write_yolo(root, image: np.ndarray, count: int = 1) -> None:
    height, width = image.shape[:2]
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("cat\ndog\n")
    lines = [
        f"{cls} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} "
        f"{(x1 - x0) / width} {(y1 - y0) / height}"
        for cls, (x0, y0, x1, y1) in enumerate(BOXES.values())
    ]
    for i in range(count):
        Image.fromarray(image).save(root / "images" / "train" / f"{i:03d}.jpg")
        (root / "labels" / "train" / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")


def write_coco(root, image: np.ndarray) -> None:
    root.mkdir()
    Image.fromarray(image).save(root / "a.jpg")
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"id": i, "image_id": 7, "category_id": cid, "bbox": [x0, y0, x1 - x0, y1 - y0]}
            for i, (cid, (x0, y0, x1, y1)) in enumerate(zip((17, 18), BOXES.values()))
        ],
    }
    (root / "instances.json").write_text(json.dumps(data))


def write_voc(root, image: np.ndarray) -> None:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.fromarray(image).save(root / "JPEGImages" / "a.jpg")
    objects = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1:g}</xmin>"
        f"<ymin>{y0 + 1:g}</ymin><xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in BOXES.items()
    )
    xml = "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height>"
    (root / "Annotations" / "a.xml").write_text(xml + f"</size>{objects}</annotation>")


def test_yolo_coco_and_voc_parsers_agree(tmp_path):
    image = np.full((48, 64, 3), 90, np.uint8)
    write_yolo(tmp_path / "yolo", image)
    write_coco(tmp_path / "coco", image)
    write_voc(tmp_path / "voc", image)
    sets = [
        open_detection(tmp_path / "yolo"),
        open_detection(tmp_path / "coco" / "instances.json"),
        open_detection(tmp_path / "voc"),
    ]
    for dataset in sets:
        assert dataset.class_names == ["cat", "dog"]
        ((_, labels),) = dataset.items
        named = {dataset.class_names[c]: box for c, box in zip(labels.labels, labels.boxes)}
        for name, box in BOXES.items():
            np.testing.assert_allclose(named[name], box, atol=1e-4, err_msg=dataset.layout)


# ---------------------------------------------------------------------------------------------
# Command line smoke runs
# ---------------------------------------------------------------------------------------------


def test_eval_depth_smoke_runs_write_json_and_grid(rgbd_npz, tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), run, progress=False)
    common = ["--data", str(rgbd_npz), "--steps", "2", "--size", "16", "--quiet"]
    out = tmp_path / "depth.json"
    assert main(["eval", "depth", str(run), *common, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "depth" and result["mode"] == "frozen"
    assert result["test_frames"] == [8, 9] and not result["registered"]
    assert "not registered" in result["note"] and (tmp_path / "depth.png").is_file()
    assert 0 <= result["metrics"]["delta1"] <= 1 and result["metrics"]["rmse"] >= 0
    assert set(result["constant_baseline"]) == set(result["metrics"])
    normals = tmp_path / "normals.json"
    args = ["--target", "normals", "--finetune", "--json", str(normals)]
    assert main(["eval", "depth", "random:alexnet_small", *common, *args]) == 0
    result = json.loads(normals.read_text())
    assert result["protocol"] == "normals" and result["mode"] == "finetune"
    assert 0 <= result["metrics"]["mean_deg"] <= 180


def test_eval_depth_supervised_baseline_needs_labelled_data(rgbd_npz, tmp_path, capsys):
    args = ["--data", str(rgbd_npz), "--json", str(tmp_path / "s.json"), "--quiet"]
    assert main(["eval", "depth", "supervised:alexnet_small", *args]) == 2
    assert "--supervised-data" in capsys.readouterr().err


@needs_pycocotools
def test_eval_detect_smoke_run_reports_mean_and_std_over_seeds(tmp_path):
    image = np.full((48, 64, 3), 40, np.uint8)
    image[6:30, 4:20] = 220  # the "cat"
    image[10:40, 30:60] = (30, 200, 30)  # the "dog"
    write_yolo(tmp_path / "yolo", image, count=5)
    out = tmp_path / "det.json"
    args = ["--data", str(tmp_path / "yolo"), "--json", str(out), "--steps", "2", "--size", "64"]
    code = main(["eval", "detect", "random:alexnet_small", *args, "--seeds", "0", "1", "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert [run["seed"] for run in result["seeds"]] == [0, 1]
    assert result["num_train"] == 4 and result["num_test"] == 1
    assert set(result["summary"]["map_50"]) == {"mean", "std", "values"}
    assert 0 <= result["summary"]["map"]["mean"] <= 1 and (tmp_path / "det.png").is_file()
