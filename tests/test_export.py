"""`selfsup export` (each format reloads to the same outputs) and `selfsup embed`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.config import resolve
from selfsup.data import views as V
from selfsup.data.trunk_input import COLOURS, TrunkInput, input_of_config
from selfsup.data.views import MEAN, STD, normalize, to_float
from selfsup.runs import load_backbone, load_safetensors_backbone
from selfsup.tasks import task_config_class
from selfsup.train import train
from tests.conftest import make_images
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    images, labels = make_images(32)
    np.savez(folder / "train.npz", images=images, labels=labels)
    train(tiny_config(folder / "train.npz", "train.steps=3"), folder / "run", progress=False)
    return folder / "run"


def reference_output(run: Path, x: torch.Tensor) -> torch.Tensor:
    backbone = load_backbone(str(run)).backbone.eval()
    with torch.no_grad():
        return backbone(x)


def reload_output(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    """Run the exported file the way a user without selfsup would (safetensors aside)."""
    if fmt == "safetensors":
        backbone, _ = load_safetensors_backbone(path)
        with torch.no_grad():
            return backbone(x)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch marks jit as deprecated
            return torch.jit.load(str(path))(x).detach()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_export_reloads_to_the_same_outputs(run, tmp_path, fmt, capsys):
    if fmt == "onnx":
        for package in ("onnx", "onnxruntime"):  # optional: `pip install -e .[dev]` has both
            pytest.importorskip(package, reason=f"{package} is not installed")
    out = tmp_path / f"backbone.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    info = json.loads((tmp_path / f"backbone.{fmt}.json").read_text())
    assert info["format"] == fmt and info["input"]["size"] == 32
    assert info["input"]["mean"] == list(MEAN) and info["input"]["std"] == list(STD)
    assert info["input"]["grayscale"] is False
    assert info["layer_names"][-1] == info["output"]["layer"] == "pool5"
    assert info["output"]["shape_at_size"] == [256, 4, 4]
    # Batch and side differ from the traced example (1 x 32 px): the graphs are dynamic.
    x = normalize(torch.rand(3, 3, 40, 40), MEAN, STD)
    expected = reference_output(run, x)
    got = reload_output(fmt, out, x)
    assert got.shape == expected.shape == (3, 256, 5, 5)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_exported_safetensors_is_a_model_for_eval(run, tmp_path, capsys):
    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(out)]) == 0
    from_file, from_run = load_backbone(str(out)), load_backbone(str(run))
    assert from_file.step == from_run.step == 3
    assert from_file.config == from_run.config  # carried in the file's metadata
    a, b = from_file.backbone.state_dict(), from_run.backbone.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    data = str(run.parent / "train.npz")
    args = ["--data", data, "--test", data, "--k", "5", "--no-cache", "--quiet"]
    assert main(["eval", "knn", str(out), *args]) == 0
    assert "backbone" in capsys.readouterr().out  # the table names the model by file stem


def test_the_input_record_follows_the_run_and_reads_back_from_its_description():
    """One rule decides what a trunk is fed; an export's description reads back to the same
    record, and an earlier export (only `grayscale`) still reads as grayscale. A harmonized
    multi-task run is fed colorization's input: every task trained on lightness."""
    harmonized = {"task": "multitask", "multitask": {"harmonize": True}, "data": {"image_size": 48}}
    assert input_of_config(harmonized) == TrunkInput("lightness", 48)
    assert input_of_config({"task": "colorization"}).colour == "lightness"
    assert input_of_config({"task": "multitask", "multitask": {"harmonize": False}}).colour == "rgb"
    for colour in COLOURS:
        record = TrunkInput(colour, 32)
        assert TrunkInput.from_dict(record.describe()) == record
        assert TrunkInput.from_dict(record.to_dict()) == record
    assert TrunkInput.from_dict({"grayscale": True, "size": 32}).colour == "grayscale"


def test_each_colour_mode_feeds_the_trunk_as_its_task_saw_images():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    x = to_float(images)
    torch.testing.assert_close(TrunkInput("rgb").prepare(images), normalize(x, MEAN, STD))
    gray = TrunkInput("grayscale").prepare(images)
    torch.testing.assert_close(gray, normalize(V.grayscale(x), MEAN, STD))
    lightness = (V.rgb_to_lab(x)[:, :1] / 100).expand(-1, 3, -1, -1)  # colorization's input
    torch.testing.assert_close(
        TrunkInput("lightness").prepare(images), normalize(lightness, MEAN, STD)
    )


def test_a_colorization_trunk_is_exported_and_evaluated_on_lightness(tmp_path):
    """The record is written into the checkpoint at training and into the export, and both
    read back the same: evaluation, export and embedding all feed the trunk lightness."""
    images, labels = make_images(16)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    values = {
        "task": "colorization",
        "colorization": {"head_hidden": 8},
        "backbone": {"name": "alexnet_small"},
        "data": {"path": str(tmp_path / "train.npz"), "batch_size": 8, "workers": 0},
        "train": {"steps": 1},
    }
    train(resolve(values, task_config_class), tmp_path / "run", progress=False)
    from_run = load_backbone(str(tmp_path / "run"))
    assert from_run.input == TrunkInput("lightness", 32)
    out = tmp_path / "color.safetensors"
    assert (
        main(["export", str(tmp_path / "run"), "--format", "safetensors", "--out", str(out)]) == 0
    )
    sidecar = json.loads((tmp_path / "color.safetensors.json").read_text())
    assert sidecar["input"]["colour"] == "lightness" and sidecar["input"]["size"] == 32
    assert load_backbone(str(out)).input == from_run.input


def test_export_torchvision_format_refuses_other_architectures(run, tmp_path, capsys):
    code = main(["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "m.pth")])
    assert code == 2
    assert "alexnet_torchvision" in capsys.readouterr().err


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = make_images(count, size=size, seed=3)
    paths = [folder / f"img{i}.png" for i in range(count)]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    return paths


def test_embed_folder_files_and_npz_in_order_skipping_bad_files(run, tmp_path, capsys):
    folder_images = write_images(tmp_path / "photos", 5, 32)
    loose = write_images(tmp_path / "loose", 1, 48)[0]  # resized to 32 like training data
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    images, _ = make_images(3, seed=4)
    np.savez(tmp_path / "more.npz", images=images)
    out = tmp_path / "features.npz"
    inputs = [str(tmp_path / "photos"), str(loose), str(tmp_path / "more.npz")]
    options = ["--out", str(out), "--batch-size", "4", "--workers", "0", "--quiet"]
    assert main(["embed", str(run), *inputs, *options]) == 0
    assert "skipped 1" in capsys.readouterr().out
    saved = np.load(out)
    names = list(saved["names"])
    assert saved["features"].shape == (9, 256) and saved["features"].dtype == np.float32
    assert str(saved["layer"]) == "pool5"
    assert names[:5] == [str(p) for p in folder_images]  # sorted folder order, broken skipped
    assert names[5] == str(loose) and names[6].endswith("more.npz[0]")
    assert list(saved["skipped"]) == [str(tmp_path / "photos" / "broken.jpg")]
    # The features are the global average of the final map, as for kNN.
    backbone = load_backbone(str(run)).backbone.eval()
    x = normalize(to_float(torch.from_numpy(images).permute(0, 3, 1, 2)), MEAN, STD)
    with torch.no_grad():
        expected = backbone(x).mean(dim=(2, 3))
    assert np.allclose(saved["features"][6:], expected.numpy(), atol=1e-5)


def test_embed_layer_choice_and_unknown_layer(run, tmp_path, capsys):
    write_images(tmp_path / "photos", 2, 32)
    out = tmp_path / "conv3.npz"
    options = ["--workers", "0", "--quiet", "--out", str(out)]
    assert main(["embed", str(run), str(tmp_path / "photos"), "--layer", "conv3", *options]) == 0
    assert np.load(out)["features"].shape == (2, 384)
    assert main(["embed", str(run), str(tmp_path / "photos"), "--layer", "fc9", *options]) == 2
    assert "fc9" in capsys.readouterr().err
