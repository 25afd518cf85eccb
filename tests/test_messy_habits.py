"""A new user's habits: a run folder reused with other settings, outputs written over
inputs, empty or overlong --out paths. Each is refused where the setting or path is read,
in one line naming it, or (asked for explicitly) recorded."""

import json

import numpy as np
import pytest
import yaml

from selfsup.cli import main
from tests.conftest import make_images
from tests.helpers import TINY

TRAIN = ["train", "counting", "--quiet", "train.steps=2", "checkpoint.every=2", *TINY]


@pytest.fixture
def data(tmp_path):
    images, labels = make_images(32)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    return tmp_path / "train.npz"


def error_of(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2, argv
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_resume_with_other_settings_is_refused_naming_each_key(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(data), "--out", str(run)]) == 0
    before = (run / "config.yaml").read_text()
    err = error_of(
        [*TRAIN, "--data", data, "--out", run, "train.steps=4", "optim.lr=0.05",
         "data.image_size=24"], capsys,
    )  # fmt: skip
    assert err.startswith("selfsup: error:")
    assert "optim.lr: 0.01 in the run, 0.05 now" in err
    assert "data.image_size: 32 in the run, 24 now" in err
    assert "--change data.image_size optim.lr" in err or "--change optim.lr data.image_size" in err
    assert (run / "config.yaml").read_text() == before  # nothing recorded, nothing trained
    assert "train.steps" not in err  # training further is how a run goes on


def test_a_change_asked_for_is_recorded_with_its_step(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(data), "--out", str(run)]) == 0
    argv = [*TRAIN, "--data", str(data), "--out", str(run), "train.steps=4", "optim.lr=0.05",
            "--change", "optim.lr"]  # fmt: skip
    assert main(argv) == 0
    assert "changed from step 2: optim.lr=0.05" in capsys.readouterr().out
    changes = [json.loads(line) for line in (run / "changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 2, "key": "optim.lr", "from": 0.01, "to": 0.05}]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.05
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4


@pytest.mark.parametrize("out", ["", " "])
def test_an_empty_out_is_refused(data, out, capsys):
    with pytest.raises(SystemExit):
        main([*TRAIN, "--data", str(data), "--out", out])
    assert "an empty path would write into the current folder" in capsys.readouterr().err


def test_an_overlong_out_is_one_line_not_a_traceback(data, capsys):
    with pytest.raises(SystemExit):
        main([*TRAIN, "--data", str(data), "--out", "x" * 300])
    assert "File name too long" in capsys.readouterr().err


def test_outputs_never_overwrite_inputs(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(data), "--out", str(run)]) == 0
    last = run / "checkpoints" / "last.pt"
    checkpoint = last.read_bytes()
    err = error_of(["export", run, "--format", "safetensors", "--out", last], capsys)
    assert "is inside" in err and f"{run} (RUN)" in err and "overwritten" in err
    assert last.read_bytes() == checkpoint
    saved = data.read_bytes()
    err = error_of(["embed", run, data, "--out", data, "--quiet"], capsys)
    assert f"--out {data}: is {data}" in err
    assert data.read_bytes() == saved
    err = error_of(["eval", "knn", run, "--data", data, "--test", data, "--json", data], capsys)
    assert "--json" in err and data.read_bytes() == saved
    # A new result file beside a run's checkpoint destroys nothing: allowed.
    assert main(["eval", "knn", str(run), "--data", str(data), "--test", str(data), "--k", "5",
                 "--json", str(run / "knn.json"), "--no-cache", "--quiet"]) == 0  # fmt: skip
    assert (run / "knn.json").is_file() and last.read_bytes() == checkpoint
    clip = tmp_path / "clip"
    clip.mkdir()
    err = error_of(["video", "masks", clip, "--out", clip / "masks"], capsys)
    assert "is inside" in err and "(VIDEOS)" in err
    assert list(clip.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--steps", "0", "must be >= 1, got 0"),
        ("--weight-decay", "-1", "must be >= 0.0, got -1"),
        ("--image-size", "0", "must be >= 1, got 0"),
        ("--selection-rows", "many", "expected an integer, got 'many'"),
    ],
)
def test_an_evaluation_option_out_of_range_is_refused_where_it_is_read(
    data, option, value, message, capsys
):
    with pytest.raises(SystemExit):
        main(["eval", "linear", "random:alexnet_small", "--data", str(data), "--test",
              str(data), option, value])  # fmt: skip
    assert message in capsys.readouterr().err


def test_an_unknown_layer_and_a_huge_image_size_are_one_line(data, tmp_path, capsys):
    err = error_of(["eval", "linear", "random:alexnet_small", "--data", data, "--test", data,
                    "--layers", "nope", "--no-cache", "--quiet"], capsys)  # fmt: skip
    assert err.startswith("selfsup: error: --layers: unknown layer(s) ['nope']")
    err = error_of([*TRAIN, "--data", data, "--out", tmp_path / "r", "data.image_size=20000"],
                   capsys)  # fmt: skip
    assert "data.image_size: must be <= 4096, got 20000" in err


def test_test_classes_named_in_another_order_are_aligned_by_name(tmp_path):
    """Two ImageFolder-like sets whose class names come in another order: the test labels
    are renumbered to the training set's classes, so a correct classifier scores 100 %."""
    from selfsup.eval.protocol import align_classes, load_labelled

    images, labels = make_images(16)
    np.savez(tmp_path / "a.npz", images=images, labels=labels, class_names=["w", "x", "y", "z"])
    # The same images, their classes listed backwards: label k now names class 3 - k.
    np.savez(tmp_path / "b.npz", images=images, labels=3 - labels,
             class_names=["z", "y", "x", "w"])  # fmt: skip
    train = load_labelled(str(tmp_path / "a.npz"), 32, progress=False)
    test = align_classes(train, load_labelled(str(tmp_path / "b.npz"), 32, progress=False))
    assert test.class_names == ["w", "x", "y", "z"]
    assert test.labels.tolist() == train.labels.tolist()
