import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import BadImageError, DataFormatError, ImageStream, decode_all, open_source
from selfsup.data.decode import fit_to_square, open_image
from tests.conftest import make_images


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def image_tree(root: Path, count: int = 12, classes: int = 3, size: int = 40) -> Path:
    images, labels = make_images(count, size, classes)
    for i, (image, label) in enumerate(zip(images, labels)):
        write_png(root / f"class{label}" / f"{i:03d}.png", image)
    return root


def packed_npz(path: Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    extra = {"labels": labels} if labels is not None else {}
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, **extra)
    return path


def test_image_folder_tree_has_labels_from_sorted_class_dirs(tmp_path):
    source = open_source(image_tree(tmp_path / "tree"))
    assert len(source) == 12
    assert source.class_names == ["class0", "class1", "class2"]
    assert source.labels.tolist() == sorted(source.labels.tolist())
    assert source.load(0).shape == (40, 40, 3)


def test_flat_folder_has_no_labels(tmp_path):
    images, _ = make_images(3)
    for i, image in enumerate(images):
        write_png(tmp_path / f"{i}.png", image)
    source = open_source(tmp_path)
    assert len(source) == 3 and source.labels is None


def test_packed_jpeg_npz_decodes_close_to_the_original(tmp_path):
    ramp = np.linspace(0, 255, 32).astype(np.uint8)
    smooth = np.stack(
        [np.dstack([np.add.outer(ramp // 2, ramp // 2 - i)] * 3) for i in range(8)]
    ).astype(np.uint8)  # JPEG keeps smooth images well
    labels = np.arange(8) % 2
    source = open_source(packed_npz(tmp_path / "p.npz", smooth, labels))
    assert len(source) == 8 and source.labels.tolist() == labels.tolist()
    error = np.abs(source.load(3).astype(int) - smooth[3].astype(int)).mean()
    assert error < 3


def make_bad_path(root: Path, kind: str) -> Path:
    if kind == "empty":
        (root / "empty").mkdir()
        (root / "empty" / "notes.txt").write_text("no images here")
        return root / "empty"
    if kind == "text":
        (root / "x.txt").write_text("hi")
        return root / "x.txt"
    if kind == "npz":
        (root / "bad.npz").write_bytes(b"nonsense")
        return root / "bad.npz"
    return root / "missing"


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist"),
        ("empty", "no images found"),
        ("text", "not a recognised dataset"),
        ("npz", "cannot be read"),
    ],
)
def test_unrecognised_data_paths_are_clear_errors(tmp_path, kind, message):
    path = make_bad_path(tmp_path, kind)
    with pytest.raises(DataFormatError, match=message) as info:
        open_source(path)
    assert str(path) in str(info.value)


def test_npz_with_mismatched_labels_or_wrong_dtype(tmp_path):
    images, _ = make_images(4)
    np.savez(tmp_path / "a.npz", images=images, labels=np.arange(3))
    with pytest.raises(DataFormatError, match="labels"):
        open_source(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=images.astype(np.float32))
    with pytest.raises(DataFormatError, match="uint8"):
        open_source(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", pixels=images)
    with pytest.raises(DataFormatError, match="expected `images`"):
        open_source(tmp_path / "c.npz")


def test_grayscale_rgba_palette_and_16bit_images_load(tmp_path):
    gray = np.tile(np.arange(32, dtype=np.uint8)[None] * 8, (32, 1))
    rgba = np.dstack([np.full((32, 32, 3), 200, np.uint8), np.full((32, 32), 128, np.uint8)])
    deep = (gray.astype(np.uint16) * 256).astype(np.uint16)
    files = [
        write_png(tmp_path / "g.png", gray),
        write_png(tmp_path / "a.png", rgba),
        write_png(tmp_path / "d.png", deep),
    ]
    Image.fromarray(rgba[:, :, :3]).convert("P").save(tmp_path / "p.png")
    files.append(tmp_path / "p.png")
    for file in files:
        array = open_image(file, str(file))
        assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert abs(int(open_image(files[1], "a")[0, 0, 0]) - 100) <= 1  # alpha on black: 200*128/255
    assert open_image(files[2], "d").max() == round(248 * 256 / 257)  # 16-bit range -> 8-bit


def test_corrupt_image_names_the_file_or_is_skipped_and_counted(tmp_path):
    root = image_tree(tmp_path / "tree", count=6)
    bad = root / "class0" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    source = open_source(root)
    with pytest.raises(BadImageError, match=r"zz_broken\.png"):
        decode_all(source, 32, workers=0, progress=False)
    decoded = decode_all(source, 32, workers=0, on_bad_image="skip", progress=False)
    assert len(decoded.images) == 6 and decoded.skipped == [str(bad)]
    assert len(decoded.labels) == 6


def test_small_images_upscale_or_reject():
    tiny = np.full((10, 20, 3), 77, np.uint8)
    fitted = fit_to_square(tiny, 32, "tiny")
    assert fitted.shape == (3, 32, 32) and int(fitted.float().mean().round()) == 77
    with pytest.raises(BadImageError, match="smaller than image_size=32"):
        fit_to_square(tiny, 32, "tiny", small_images="reject")


def test_fit_resizes_shorter_side_and_centre_crops():
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 30:50] = 255  # a bright vertical band in the middle survives the centre crop
    out = fit_to_square(wide, 20, "wide")
    assert out.shape == (3, 20, 20)
    assert out[:, :, 10].float().mean() > 200 and out[:, :, 0].float().mean() < 10


def test_memory_and_stream_modes_give_identical_batches(tmp_path):
    images, labels = make_images(40, size=32)
    source = open_source(packed_npz(tmp_path / "p.npz", images, labels))
    kwargs = {"size": 24, "batch_size": 8, "seed": 3, "progress": False}
    memory = ImageStream(source, mode="memory", workers=0, **kwargs)
    stream = ImageStream(source, mode="stream", workers=1, **kwargs)
    for (s1, x1, y1, _), (s2, x2, y2, _) in zip(memory.batches(2), stream.batches(2)):
        assert s1 == s2 and torch.equal(x1, x2) and torch.equal(y1, y2)
        if s1 == 8:  # crosses into the second epoch (5 steps per epoch)
            break


def test_pinned_batches_are_the_same_batches_in_page_locked_memory(tmp_path, monkeypatch):
    # Page-locking needs a CUDA device; a stand-in records which tensors would be pinned.
    pinned = []

    def fake_pin_memory(tensor):
        pinned.append(tensor.shape)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin_memory)
    images, labels = make_images(40, size=32)
    source = open_source(packed_npz(tmp_path / "p.npz", images, labels))
    kwargs = {"size": 24, "batch_size": 8, "seed": 3, "progress": False, "workers": 0}
    for mode in ("memory", "stream"):
        plain = ImageStream(source, mode=mode, **kwargs)
        pinning = ImageStream(source, mode=mode, pin_memory=True, **kwargs)
        pinned.clear()
        for (s1, x1, y1, m1), (s2, x2, y2, m2) in zip(plain.batches(3), pinning.batches(3)):
            assert s1 == s2 and torch.equal(x1, x2) and torch.equal(y1, y2)
            assert m1 is None and m2 is None
            if s1 == 6:
                break
        # images and labels of each of the 4 steps; the absent masks stay None
        assert pinned == [torch.Size([8, 3, 24, 24]), torch.Size([8])] * 4


def test_batches_depend_only_on_step_and_shard_across_ranks(tiny_npz):
    source = open_source(tiny_npz)
    full = ImageStream(source, size=32, batch_size=8, seed=1, progress=False)
    batches = {}
    for step, x, _, _ in full.batches(0):
        batches[step] = x
        if step == 5:
            break
    _, resumed, _, _ = next(full.batches(4))
    assert torch.equal(resumed, batches[4])
    ranks = [
        ImageStream(source, size=32, batch_size=4, seed=1, rank=r, world_size=2, progress=False)
        for r in (0, 1)
    ]
    shards = [next(r.batches(0))[1] for r in ranks]
    assert torch.equal(torch.cat(shards), batches[0])  # the two ranks split the global batch


def test_too_few_images_for_one_batch(tiny_npz):
    with pytest.raises(DataFormatError, match="fewer than one global batch"):
        ImageStream(open_source(tiny_npz), size=32, batch_size=512, progress=False)


def test_real_cifar_sample_decodes(real_data):
    source = open_source(real_data / "cifar10" / "test_1k.npz")
    decoded = decode_all(source, 32, progress=False)
    assert decoded.images.shape == (1000, 3, 32, 32) and decoded.labels.max() == 9
