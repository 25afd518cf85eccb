"""A corpus of bad inputs, generated here, each with its exact outcome through the CLI: exit
code 2 and one stderr line naming the file (or config key) and the problem, or, for images
under `data.on_bad_image=skip`, a skipped-and-counted image and a run that goes on.

docs/reliability.md lists every case with the test that covers it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from selfsup.cli import main
from selfsup.data import BadImageError, decode_all, open_source
from selfsup.data.decode import open_image
from selfsup.data.worker_errors import load_batches
from tests.conftest import make_images
from tests.helpers import SMALL_RESNET, TINY, one_torch_thread  # noqa: F401 (autouse)

# TINY with a small backbone and a batch of two: each run below takes a fraction of a second.
FAST = [*TINY, *SMALL_RESNET, "data.batch_size=2", "train.steps=1"]


def train_cli(data: Path | str, out: Path, *extra: str) -> int:
    return main(["train", "counting", "--data", str(data), "--out", str(out), "--quiet", *extra])


def assert_error_names(capsys, code: int, *fragments: str) -> None:
    """Exit code 2 and a single stderr line that contains every fragment."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("selfsup: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# --- generated image files -------------------------------------------------------------------


def encoded(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    (image.convert(mode) if mode else image).save(buffer, format=fmt)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims `width` x `height`: PIL's decompression-bomb check
    runs on the header, so this tests the huge-image refusal without allocating anything."""
    data = bytearray(encoded(np.zeros((1, 1), np.uint8), "PNG"))
    header = data[12:29]  # b"IHDR" + 13 bytes of fields, after the signature and length
    header[4:12] = struct.pack(">II", width, height)
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(header)))
    return bytes(data)


SAMPLE = make_images(1, size=40)[0][0]  # (40, 40, 3) uint8
JPEG, PNG = encoded(SAMPLE, "JPEG"), encoded(SAMPLE, "PNG")

# file name -> (bytes, what the error says about it). PIL words truncation differently for
# JPEG ("Truncated File Read") and PNG ("image file is truncated").
BAD_IMAGES = {
    "zero_byte.jpg": (b"", "empty file (0 bytes)"),
    "zero_byte.png": (b"", "empty file (0 bytes)"),
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "cannot be decoded"),
    "truncated.png": (PNG[: len(PNG) // 2], "cannot be decoded"),
    "text.jpg": (b"these are notes, not pixels\n", "not a recognised image format"),
    "bomb.png": (png_claiming_size(30_000, 30_000), "decompression bomb"),
}


def image_folder(root: Path, bad: Sequence[str] = (), good: int = 4) -> Path:
    """A flat folder of `good` PNGs plus the named files of BAD_IMAGES."""
    root.mkdir(parents=True)
    for i, image in enumerate(make_images(good, size=24)[0]):
        (root / f"good{i}.png").write_bytes(encoded(image, "PNG"))
    for name in bad:
        (root / name).write_bytes(BAD_IMAGES[name][0])
    return root


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_stops_the_run_naming_file_and_problem(tmp_path, capsys, name):
    folder = image_folder(tmp_path / "images", [name])
    code = train_cli(folder, tmp_path / "run", *FAST)
    assert_error_names(capsys, code, str(folder / name), BAD_IMAGES[name][1])


@pytest.mark.parametrize("cache", ["memory", "stream"])
def test_bad_images_are_skipped_and_counted_under_skip(tmp_path, capsys, cache):
    folder = image_folder(tmp_path / "images", sorted(BAD_IMAGES))
    # Stream mode meets images as it trains: enough steps to read every file once.
    steps = "train.steps=1" if cache == "memory" else "train.steps=6"
    code = train_cli(
        folder, tmp_path / "run", *FAST, "data.on_bad_image=skip", f"data.cache={cache}", steps
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"skipped {len(BAD_IMAGES)} unreadable images (data.on_bad_image=skip)" in out
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_every_image_bad_under_skip_is_an_error(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", sorted(BAD_IMAGES), good=0)
    code = train_cli(folder, tmp_path / "run", *FAST, "data.on_bad_image=skip")
    assert_error_names(capsys, code, str(folder), f"none of the {len(BAD_IMAGES)} images")


def test_odd_but_valid_images_decode_by_the_documented_rule(tmp_path):
    """CMYK JPEG, 16-bit and palette PNGs (with and without transparency) and a 1x1 image all
    become (3, S, S) uint8; 1x1 is upscaled, or rejected and counted with small_images=reject."""
    gray16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    files = {
        "cmyk.jpg": encoded(SAMPLE, "JPEG", mode="CMYK"),
        "deep16.png": encoded(gray16, "PNG"),
        "palette.png": encoded(SAMPLE, "PNG", mode="P"),
        "one_pixel.png": encoded(np.full((1, 1, 3), (10, 200, 30), np.uint8), "PNG"),
    }
    buffer = io.BytesIO()
    Image.fromarray(SAMPLE).convert("P").save(buffer, format="PNG", transparency=0)
    files["palette_transparent.png"] = buffer.getvalue()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    source = open_source(tmp_path)
    decoded = decode_all(source, 16, workers=0, progress=False)
    assert decoded.images.shape == (len(files), 3, 16, 16) and decoded.images.dtype == torch.uint8
    assert not decoded.skipped
    cmyk = open_image(tmp_path / "cmyk.jpg", "cmyk")
    assert np.abs(cmyk.astype(int) - SAMPLE).mean() < 12  # CMYK -> RGB keeps the colours
    one = decoded.images[sorted(files).index("one_pixel.png")]
    assert torch.equal(
        one, torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16)
    )
    rejected = decode_all(
        source, 16, workers=0, on_bad_image="skip", small_images="reject", progress=False
    )
    assert rejected.skipped == [str(tmp_path / "one_pixel.png")]
    with pytest.raises(BadImageError, match=r"one_pixel\.png: 1x1 is smaller than image_size=16"):
        decode_all(source, 16, workers=0, small_images="reject", progress=False)


def test_huge_jpeg_is_decoded_at_reduced_scale(tmp_path):
    """An 8000x8000 JPEG (a flat one: cheap to encode) is decoded by libjpeg at 1/8 scale, so
    it costs 3 MB instead of 192 MB; a header claiming 30000x30000 is refused unread."""
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (8000, 8000), (90, 120, 150)).save(path, quality=50)
    assert open_image(path, "huge", min_size=32).shape == (1000, 1000, 3)
    source = open_source(tmp_path)
    image = decode_all(source, 32, workers=0, progress=False).images[0]
    assert (image.int() - torch.tensor([90, 120, 150]).view(3, 1, 1)).abs().max() <= 2
    with pytest.raises(BadImageError, match="decompression bomb"):
        open_image(png_claiming_size(30_000, 30_000), "bomb.png")


# --- bad images met in DataLoader worker processes -------------------------------------------

# DataLoader re-raises a worker's exception as "Caught BadImageError in DataLoader worker
# process 0. Original Traceback ...": every command that decodes in workers must still give
# the one line the single-process path gives.
WORKER_BAD_IMAGES = ["truncated.jpg", "zero_byte.png", "text.jpg"]


def labelled_folder(root: Path, bad: str) -> Path:
    """An ImageFolder tree of four images in two classes, one of them the bad file `bad`: a
    training epoch of two batches of two reads it, as does every evaluation."""
    image_folder(root / "a", [bad], good=1)
    image_folder(root / "b", good=2)
    return root


@pytest.fixture(scope="module")
def run_to_evaluate(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    images, labels = make_images(8)
    np.savez(folder / "data.npz", images=images, labels=labels)
    assert train_cli(folder / "data.npz", folder / "run", *FAST) == 0
    return folder / "run"


def worker_command(command: str, data: Path, run: Path, out: Path) -> list[str]:
    """argv of `command` reading `data` with two decoding worker processes."""
    train = ["train", "counting", "--data", str(data), "--out", str(out), "--quiet", *FAST,
             "train.steps=2", "data.workers=2"]  # fmt: skip
    evaluate = ["--data", str(data), "--test", str(data), "--no-cache", "--quiet"]
    return {
        "train stream": [*train, "data.cache=stream"],
        "train memory": [*train, "data.cache=memory"],
        "eval linear": ["eval", "linear", str(run), *evaluate],
        "eval knn": ["eval", "knn", str(run), *evaluate],
        "report": ["report", str(run), *evaluate, "--no-baselines", "--out", str(out)],
    }[command]


@pytest.mark.parametrize("bad", WORKER_BAD_IMAGES)
@pytest.mark.parametrize(
    "command", ["train stream", "train memory", "eval linear", "eval knn", "report"]
)
def test_bad_image_in_a_worker_process_is_one_line(tmp_path, capsys, run_to_evaluate, command, bad):
    folder = labelled_folder(tmp_path / "images", bad)
    code = main(worker_command(command, folder, run_to_evaluate, tmp_path / "out"))
    assert_error_names(capsys, code, str(folder / "a" / bad), BAD_IMAGES[bad][1])


def test_embed_skips_bad_images_met_in_worker_processes(tmp_path, capsys, run_to_evaluate):
    folder = image_folder(tmp_path / "images", WORKER_BAD_IMAGES)
    argv = ["embed", str(run_to_evaluate), str(folder), "--out", str(tmp_path / "f.npz"),
            "--workers", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped 3 unreadable images" in captured.out and not captured.err
    skipped = np.load(tmp_path / "f.npz")["skipped"]
    assert sorted(skipped) == sorted(str(folder / name) for name in WORKER_BAD_IMAGES)


class FailsAt(torch.utils.data.Dataset):
    """Items 0..7; item 5 raises `error`."""

    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> int:
        if index == 5:
            raise self.error
        return index


def test_worker_user_errors_arrive_as_themselves_and_bugs_as_dataloader_reports():
    """A user error keeps its type, message and attributes across the process boundary (with
    the worker's traceback as its cause); any other error keeps DataLoader's own report."""
    error = BadImageError("/data/cat.jpg", "cannot be decoded (broken data stream)")
    with pytest.raises(BadImageError) as caught:
        list(load_batches(FailsAt(error), batch_size=2, num_workers=2, collate_fn=list))
    assert str(caught.value) == "/data/cat.jpg: cannot be decoded (broken data stream)"
    assert (caught.value.name, caught.value.reason) == (error.name, error.reason)
    assert "in __getitem__" in str(caught.value.__cause__)  # where the worker raised it
    with pytest.raises(KeyError, match="DataLoader worker process"):
        list(load_batches(FailsAt(KeyError(5)), batch_size=2, num_workers=2, collate_fn=list))


# --- data folders and .npz archives ----------------------------------------------------------


def empty_folder(root: Path) -> Path:
    root.mkdir()
    return root


def folder_without_images(root: Path) -> Path:
    root.mkdir()
    (root / "README.txt").write_text("images go here")
    (root / "labels.csv").write_text("a,1\n")
    return root


def npz_with(**arrays) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path = path.with_suffix(".npz")
        np.savez(path, **arrays)
        return path

    return write


def not_a_zip(path: Path) -> Path:
    path = path.with_suffix(".npz")
    path.write_bytes(b"PK\x03\x04 and then the copy stopped")
    return path


IMAGES, LABELS = make_images(8)

# case -> (writes the data at a path and returns it, what the error says)
BAD_DATA = {
    "empty folder": (empty_folder, "no images found"),
    "folder with no images": (folder_without_images, "no images found"),
    "npz labels of another length": (
        npz_with(images=IMAGES, labels=LABELS[:5]),
        "`labels` has shape (5,) but there are 8 images",
    ),
    "npz labels of wrong shape": (
        npz_with(images=IMAGES, labels=LABELS[:, None]),
        "`labels` has shape (8, 1) but there are 8 images",
    ),
    "npz float labels": (
        npz_with(images=IMAGES, labels=LABELS.astype(np.float32)),
        "`labels` must be non-negative integers, got float32",
    ),
    "npz negative labels": (
        npz_with(images=IMAGES, labels=-LABELS - 1),
        "`labels` must be non-negative integers, got -4",
    ),
    "npz float images": (
        npz_with(images=IMAGES.astype(np.float32) / 255),
        "`images` must be uint8, got float32",
    ),
    "npz images of wrong rank": (
        npz_with(images=IMAGES[:, :, :, 0].reshape(8, -1)),
        "`images` must be (N, H, W, 3), got (8, 1024)",
    ),
    "npz with 0 images": (npz_with(images=IMAGES[:0]), "the archive holds 0 images"),
    "npz that is not a zip": (not_a_zip, "cannot be read as an .npz archive"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_path_is_named_with_the_problem(tmp_path, capsys, case):
    write, message = BAD_DATA[case]
    path = write(tmp_path / "data")
    code = train_cli(path, tmp_path / "run", *FAST)
    assert_error_names(capsys, code, str(path), message)


# --- videos ----------------------------------------------------------------------------------


def cut_video(tmp_path: Path) -> Path:
    from tests.test_video import synthetic_clip, write_avi

    write_avi(tmp_path / "full.avi", synthetic_clip(frames=12)[0])
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.avi"


def frameless_video(tmp_path: Path) -> Path:
    import cv2

    path = tmp_path / "frameless.avi"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    return path


def frameless_npz_clip(tmp_path: Path) -> Path:
    path = tmp_path / "frameless.npz"
    np.savez(path, images=np.zeros((0, 48, 64, 3), np.uint8))
    return path


BAD_VIDEOS = {
    "truncated video": (cut_video, "truncated or corrupt: decoding stopped after"),
    "video file with no frames": (frameless_video, "no frame could be decoded"),
    "npz clip with no frames": (frameless_npz_clip, "the video has no frames"),
}


@pytest.mark.parametrize("case", sorted(BAD_VIDEOS))
def test_bad_video_is_named_with_the_problem(tmp_path, capsys, case):
    pytest.importorskip("cv2")
    make, message = BAD_VIDEOS[case]
    path = make(tmp_path)
    code = main(["video", "masks", str(path), "--out", str(tmp_path / "masks"), "--quiet"])
    assert_error_names(capsys, code, str(path), message)


# --- config files ----------------------------------------------------------------------------

# (The files set no key that FAST overrides: an override would win over the file.)
BAD_CONFIGS = {
    "unknown key": ({"optim": {"lrr": 0.1}}, "unknown key 'optim.lrr'"),
    "unknown section": ({"optimizer": {"lr": 0.1}}, "unknown key 'optimizer'"),
    "wrong type": ({"checkpoint": {"every": "often"}}, "checkpoint.every: expected an integer"),
    "section not a mapping": ({"checkpoint": 5}, "checkpoint: expected a mapping"),
    "negative learning rate": ({"optim": {"lr": -0.1}}, "optim.lr: must be > 0.0, got -0.1"),
    "zero dist timeout": ({"train": {"dist_timeout": 0}}, "train.dist_timeout: must be > 0.0"),
    "bad choice": ({"data": {"on_bad_image": "ignore"}}, "data.on_bad_image: 'ignore' is not"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_file_names_the_key(tiny_npz, tmp_path, capsys, case):
    values, message = BAD_CONFIGS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(values))
    code = train_cli(tiny_npz, tmp_path / "run", "--config", str(config), *FAST)
    assert_error_names(capsys, code, message)


def test_config_file_or_override_that_is_not_yaml_is_named(tiny_npz, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("optim: {lr: 0.1\n")
    code = train_cli(tiny_npz, tmp_path / "run", "--config", str(config))
    assert_error_names(capsys, code, str(config), "is not valid YAML", "at line 2, column 1")
    code = train_cli(tiny_npz, tmp_path / "run", "counting.head_hidden=[32,")
    assert_error_names(capsys, code, "override 'counting.head_hidden=[32,'", "not a valid YAML")


# --- checkpoints -----------------------------------------------------------------------------


@pytest.fixture
def trained_run(tiny_npz, tmp_path) -> Path:
    out = tmp_path / "trained"
    assert train_cli(tiny_npz, out, *FAST) == 0
    return out


def test_resuming_with_another_backbone_is_refused(tiny_npz, trained_run, capsys):
    code = train_cli(tiny_npz, trained_run, *FAST, "backbone.name=alexnet_small", "train.steps=2")
    path = trained_run / "checkpoints" / "last.pt"
    assert_error_names(capsys, code, str(path), "backbone=", "use another --out folder")


def test_init_backbone_of_another_architecture_is_refused(tiny_npz, trained_run, tmp_path, capsys):
    code = train_cli(
        tiny_npz,
        tmp_path / "fine",
        *FAST,
        "backbone.name=alexnet_small",
        f"train.init_backbone={trained_run}",
    )
    assert_error_names(capsys, code, "train.init_backbone", str(trained_run), "resnet18")


def test_truncated_checkpoint_is_named_when_resuming_and_evaluating(tiny_npz, trained_run, capsys):
    path = trained_run / "checkpoints" / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code = train_cli(tiny_npz, trained_run, *FAST, "train.steps=2")
    assert_error_names(capsys, code, str(path), "unreadable or corrupted")
    code = main(["eval", "knn", str(trained_run), "--data", str(tiny_npz), "--test", str(tiny_npz)])
    assert_error_names(capsys, code, str(path), "unreadable or corrupted")
