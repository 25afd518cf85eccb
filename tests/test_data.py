import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import BadImageError, DataFormatError, ImageStream, decode_all, open_source
from selfsup.data.decode import fit_to_square, open_image
from selfsup.data.loader import choose_cache
from selfsup.data.prefetch import prefetch
from selfsup.data.throughput import decode_throughput
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


# ---------------------------------------------------------------------------------------------
# Keeping the GPU fed: the cache on the device, prefetch, JPEG decoding on the device
# ---------------------------------------------------------------------------------------------


def first_batches(stream: ImageStream, start: int, count: int) -> list[tuple]:
    """`count` batches from `start`, moved to the CPU; the generator is closed afterwards."""
    batches = stream.batches(start)
    out = [
        tuple(t.cpu() if isinstance(t, torch.Tensor) else t for t in next(batches))
        for _ in range(count)
    ]
    batches.close()
    return out


def assert_same_batches(first: list[tuple], second: list[tuple]) -> None:
    for a, b in zip(first, second, strict=True):
        assert a[0] == b[0]
        for x, y in zip(a[1:], b[1:]):
            assert (x is None and y is None) or torch.equal(x, y), a[0]


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "selfsup-prefetch"]


def test_device_cache_gives_the_memory_batches_on_the_device(tmp_path, device):
    images, labels = make_images(40, size=32)
    source = open_source(packed_npz(tmp_path / "p.npz", images, labels))
    kwargs = {"size": 24, "batch_size": 8, "seed": 3, "progress": False, "workers": 0}
    memory = ImageStream(source, mode="memory", **kwargs)
    on_device = ImageStream(source, mode="device", device=device, **kwargs)
    # On a CPU the training device's memory is host memory: `device` is `memory` there.
    assert on_device.mode == ("device" if device.type == "cuda" else "memory")
    _, x, y, _ = next(on_device.batches(0))
    assert x.device.type == y.device.type == device.type
    # 5 steps per epoch: from step 3 the batches cross into the second and third epochs.
    assert_same_batches(first_batches(memory, 3, 9), first_batches(on_device, 3, 9))


@pytest.mark.parametrize(
    "cache, gib, device_type, expected",
    [
        ("auto", 1.0, "cuda", "device"),  # fits the GPU budget
        ("auto", 12.0, "cuda", "memory"),  # too big for the GPU, fits host memory
        ("auto", 40.0, "cuda", "stream"),  # fits neither
        ("auto", 1.0, "cpu", "memory"),  # no GPU: host memory
        ("auto", 40.0, "cpu", "stream"),
        ("device", 1.0, "cpu", "memory"),  # asked for, but the device is a CPU
        ("device", 40.0, "cuda", "device"),  # asked for: the budget only guides `auto`
        ("memory", 1.0, "cuda", "memory"),
        ("stream", 1.0, "cuda", "stream"),
    ],
)
def test_auto_cache_chooses_gpu_then_host_memory_then_stream(cache, gib, device_type, expected):
    chosen = choose_cache(
        cache, needed_gb=gib, device_type=device_type, cache_max_gb=16.0, device_cache_max_gb=8.0
    )
    assert chosen == expected


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_prefetched_batches_are_the_plain_batches(tmp_path, mode):
    images, labels = make_images(40, size=32)
    source = open_source(packed_npz(tmp_path / "p.npz", images, labels))
    kwargs = {"size": 24, "batch_size": 8, "seed": 3, "progress": False, "workers": 0}
    plain = ImageStream(source, mode=mode, prefetch=0, **kwargs)
    ahead = ImageStream(source, mode=mode, prefetch=2, **kwargs)
    assert_same_batches(first_batches(plain, 2, 8), first_batches(ahead, 2, 8))
    for thread in prefetch_threads():  # closing the generator stops its thread
        thread.join(timeout=5)
    assert not prefetch_threads()


def test_prefetch_reraises_the_producer_error_and_closes_its_source():
    failure, closed = ValueError("image 3 is broken"), []

    def items():
        try:
            yield from range(3)
            raise failure
        finally:
            closed.append(True)

    got = []
    with pytest.raises(ValueError) as info:
        for item in prefetch(items(), depth=2):
            got.append(item)
    assert got == [0, 1, 2] and info.value is failure and closed == [True]

    def endless():
        try:
            yield from iter(int, 1)
        finally:
            closed.append(True)

    ahead = prefetch(endless(), depth=2)
    assert next(ahead) == 0
    ahead.close()  # the consumer stops early: the producer stops and closes its source
    assert closed == [True, True] and not prefetch_threads()


def test_prefetched_stream_raises_the_bad_image_naming_the_file(tmp_path):
    root = image_tree(tmp_path / "tree", count=8)
    bad = root / "class0" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    stream = ImageStream(
        open_source(root), size=32, batch_size=9, mode="stream", workers=0, prefetch=2,
        progress=False,
    )  # fmt: skip
    with pytest.raises(BadImageError, match=r"zz_broken\.png"):
        next(stream.batches(0))


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth gradients with a few soft blobs: JPEG-friendly, like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        value = 128 + 80 * np.sin(3 * a * x + 3 * b * y + c)
        cy, cx = rng.uniform(0.2, 0.8, 2)
        value += 60 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.02)
        channels.append(value)
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


def jpeg_tree(root: Path) -> Path:
    """JPEGs of several shapes (wide, tall, grayscale, one smaller than the size) and a PNG."""
    shapes = [(60, 80), (96, 64), (70, 70), (50, 120), (20, 30), (64, 48)]
    for i, (height, width) in enumerate(shapes):
        image = Image.fromarray(photo_like(height, width, seed=i))
        if i == 2:
            image = image.convert("L")
        path = root / f"class{i % 2}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92)
    write_png(root / "class1" / "9.png", photo_like(40, 56, seed=9))
    return root


def test_device_jpeg_decode_is_close_to_the_pil_path(tmp_path, device):
    source = open_source(jpeg_tree(tmp_path / "jpegs"))
    kwargs = {"size": 24, "batch_size": 7, "mode": "stream", "workers": 0, "progress": False}
    (step, cpu, labels, _), = first_batches(ImageStream(source, **kwargs), 0, 1)  # fmt: skip
    on_device = ImageStream(source, decode="device", device=device, **kwargs)
    batches = on_device.batches(0)
    step2, gpu, labels2, _ = next(batches)
    batches.close()
    assert gpu.device.type == device.type
    gpu = gpu.cpu()
    assert step == step2 and torch.equal(labels, labels2)
    assert gpu.shape == cpu.shape == (7, 3, 24, 24) and gpu.dtype == torch.uint8
    # PIL decodes large JPEGs at a reduced DCT scale before its resize, nvjpeg/libjpeg at
    # full size: a few grey levels apart on average, never far apart anywhere.
    error = (gpu.float() - cpu.float()).abs()
    assert error.mean() < 4 and error.amax() < 48, (error.mean(), error.amax())
    # The PNG (the last file) goes through PIL in both: identical pixels.
    order = on_device.order.permutation(0).tolist()
    (png,) = [k for k, i in enumerate(order) if i == len(source) - 1]
    assert torch.equal(gpu[png], cpu[png])


@pytest.mark.parametrize("on_bad_image", ["raise", "skip"])
def test_device_decode_names_a_corrupt_jpeg_or_skips_it(tmp_path, device, on_bad_image):
    root = jpeg_tree(tmp_path / "jpegs")
    good = (root / "class0" / "0.jpg").read_bytes()
    bad = root / "class0" / "zz_truncated.jpg"
    bad.write_bytes(good[: len(good) // 3])  # a JPEG header, then the data stops
    source = open_source(root)
    stream = ImageStream(
        source, size=24, batch_size=len(source), mode="stream", decode="device", device=device,
        workers=0, on_bad_image=on_bad_image, progress=False,
    )  # fmt: skip
    if on_bad_image == "raise":
        with pytest.raises(BadImageError, match=r"zz_truncated\.jpg"):
            next(stream.batches(0))
        return
    _, images, labels, _ = next(stream.batches(0))
    assert stream.skipped == [str(bad)]
    assert images.shape == (len(source) - 1, 3, 24, 24) and len(labels) == len(source) - 1


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_decode_throughput_counts_images_per_second(tmp_path, decode):
    root = jpeg_tree(tmp_path / "jpegs")
    speed = decode_throughput(
        root, 24, decode=decode, device="cpu", workers=0, batch_size=3, max_images=6
    )
    assert speed > 0


def test_device_cache_and_pinned_prefetch_never_wait_for_the_gpu(tmp_path, cuda):
    images, labels = make_images(40, size=32)
    source = open_source(packed_npz(tmp_path / "p.npz", images, labels))
    kwargs = {"size": 24, "batch_size": 8, "seed": 3, "progress": False, "workers": 0}
    for mode in ("device", "memory"):
        stream = ImageStream(source, mode=mode, device=cuda, **kwargs)
        assert stream.prefetch == (0 if mode == "device" else 2)
        batches = stream.batches(0)
        next(batches)  # start-up (CUDA context, first pinned blocks) may synchronise
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(7):  # crosses into a new epoch: a new permutation goes to the GPU
                _, x, y, _ = next(batches)
                x = x.to(cuda, non_blocking=True)
                y = y.to(cuda, non_blocking=True)
                (x.float().mean() + y.float().mean()).neg_()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            batches.close()
