"""WebDataset tar shards as training data: `selfsup data pack` writes them, `--data` reads
them as one step-indexed source (every sample once per epoch over ranks and workers, seeded
order, exact resume), and a bad shard gets the same one-line error as a bad file."""

import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data import BadImageError, DataFormatError, ImageStream, open_source
from selfsup.data.formats import class_count
from selfsup.data.pack import pack, shard_pattern
from selfsup.demo import sample_path
from tests.helpers import TINY
from tests.test_ddp import free_port

pytest.importorskip(
    "webdataset", reason="tar shards need the extra: pip install 'selfsup[webdataset]'"
)


def numbered_npz(path: Path, count: int, size: int = 16) -> Path:
    """Images whose top-left pixel spells their index (red + 256 * green) and whose label is
    their index, so a batch tells which samples it holds by pixels and by labels."""
    images = np.full((count, size, size, 3), 90, dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count) % 256
    images[:, 0, 0, 1] = np.arange(count) // 256
    np.savez(path, images=images, labels=np.arange(count))
    return path


def pixel_index(images: torch.Tensor) -> list[int]:
    """The indices the images of a (B, 3, S, S) batch spell (see numbered_npz)."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


@pytest.fixture
def numbered_shards(tmp_path) -> str:
    """64 numbered samples in 4 shards (PNG, lossless); their brace pattern."""
    source = open_source(numbered_npz(tmp_path / "numbered.npz", 64))
    return shard_pattern(pack(source, tmp_path / "shards", shard_size=16, progress=False))


def test_bundled_sample_packs_to_shards_that_read_back_the_same(tmp_path, capsys):
    npz = sample_path("train")
    assert main(["data", "pack", str(npz), "--out", str(tmp_path / "shards"), "--quiet",
                 "--shard-size", "2000"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    pattern = str(tmp_path / "shards" / "train-{000000..000002}.tar")
    assert f"--data '{pattern}'" in printed
    original, shards = open_source(npz), open_source(pattern)
    assert len(shards) == len(original) == 5000 and len(shards.shards) == 3
    assert np.array_equal(shards.labels, original.labels)
    assert class_count(pattern) == 10
    for index in (0, 1999, 2000, 4999):  # the JPEG bytes travel as they are: same pixels
        assert np.array_equal(shards.load(index), original.load(index))
    # The folder of the shards is the same dataset as the pattern.
    folder = open_source(tmp_path / "shards")
    assert folder.name(4999) == shards.name(4999).replace("{000000..000002}", "000002") or (
        folder.name(4999).endswith("train-000002.tar:00004999.jpg")
    )
    # Packing again into the same folder would mix two datasets: refused.
    assert main(["data", "pack", str(npz), "--out", str(tmp_path / "shards"), "--quiet"]) == 2
    assert "already holds .tar files" in capsys.readouterr().err


def test_packed_folder_keeps_labels_and_exif_orientation(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)
            exif = Image.Exif()
            exif[0x0112] = 6 if i == 0 else 1  # the first photo is stored turned on its side
            Image.fromarray(pixels).save(
                tmp_path / "images" / name / f"{i}.jpg", quality=95, exif=exif
            )
    folder = open_source(tmp_path / "images")
    shards = open_source(shard_pattern(pack(folder, tmp_path / "shards", progress=False)))
    assert np.array_equal(shards.labels, folder.labels)
    for index in range(len(folder)):
        assert np.array_equal(shards.load(index), folder.load(index))
    assert shards.load(0).shape == (20, 12, 3)  # turned upright, as in the folder


def stream(pattern: str, **settings) -> ImageStream:
    options = dict(size=16, batch_size=8, mode="stream", workers=0, progress=False)
    return ImageStream(open_source(pattern), **{**options, **settings})


def first_steps(image_stream: ImageStream, start: int, count: int) -> list[list[int]]:
    batches = image_stream.batches(start)
    try:
        return [pixel_index(next(batches)[1]) for _ in range(count)]
    finally:
        batches.close()


def test_order_is_seeded_and_a_resumed_run_continues_at_the_right_sample(numbered_shards):
    uninterrupted = first_steps(stream(numbered_shards, seed=3), 0, 12)  # 1.5 epochs
    epoch = [i for batch in uninterrupted[:8] for i in batch]
    assert sorted(epoch) == list(range(64))  # epoch 0: each sample once
    assert epoch != list(range(64))  # shuffled, not in shard order
    assert first_steps(stream(numbered_shards, seed=3), 5, 7) == uninterrupted[5:]
    assert first_steps(stream(numbered_shards, seed=4), 0, 8) != uninterrupted[:8]
    # The labels (from .cls) travel with their images.
    batch = next(stream(numbered_shards, seed=3).batches(0))
    assert batch[2].tolist() == pixel_index(batch[1])


RANK_WORKER = textwrap.dedent("""
    import sys
    import torch
    from selfsup import dist
    from selfsup.data import ImageStream
    from selfsup.data.shards import ShardSource

    class WorkerMarked(ShardSource):
        # Pixel (1, 0) of each image names the DataLoader worker that decoded it.
        def load(self, index, min_size=None):
            image = super().load(index, min_size).copy()
            image[0, 1] = torch.utils.data.get_worker_info().id + 1
            return image

    pattern, out = sys.argv[1:]
    dist.init(torch.device("cpu"))
    stream = ImageStream(WorkerMarked(pattern), size=16, batch_size=8, mode="stream",
                         workers=2, seed=7, rank=dist.rank(), world_size=dist.world_size(),
                         progress=False)
    batches = stream.batches(0)
    seen = [next(batches) for _ in range(2 * stream.steps_per_epoch)]
    batches.close()
    torch.save({"steps_per_epoch": stream.steps_per_epoch,
                "images": [images for _, images, _, _ in seen],
                "labels": [labels for _, _, labels, _ in seen]},
               f"{out}/rank{dist.rank()}.pt")
    dist.shutdown()
""")


def test_two_ranks_of_two_workers_see_every_sample_once_per_epoch(numbered_shards, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(RANK_WORKER)
    port = f"--master_port={free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", port,
               str(script), numbered_shards, str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    steps = ranks[0]["steps_per_epoch"]
    assert steps == 64 // (8 * 2)
    epochs = []
    for epoch in (0, 1):
        seen = [
            i
            for rank in ranks
            for images in rank["images"][epoch * steps : (epoch + 1) * steps]
            for i in pixel_index(images)
        ]
        assert sorted(seen) == list(range(64)), f"epoch {epoch}: a sample lost or repeated"
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # each epoch its own order
    for rank in ranks:
        workers = {int(w) for images in rank["images"] for w in images[:, 0, 0, 1]}
        assert workers == {1, 2}  # both DataLoader workers of each rank decoded samples
        for images, labels in zip(rank["images"], rank["labels"]):
            assert labels.tolist() == pixel_index(images)


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png(value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def cli_error(capsys, data: str, tmp_path: Path) -> str:
    """The one line `selfsup train` prints for `data`."""
    code = main(["train", "counting", "--data", data, "--out", str(tmp_path / "run"),
                 "--steps", "1", "--quiet", *TINY, "data.batch_size=2",
                 "data.cache=stream"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("selfsup: error: ") and "\n" not in err, err
    return err


def test_truncated_tar_is_one_line_naming_the_shard_and_member(tmp_path, capsys):
    whole = write_tar(tmp_path / "whole.tar", {"a.png": png(), "b.png": png(1) * 40})
    data = whole.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: 512 * 3 + 100])  # inside b.png's data
    err = cli_error(capsys, str(cut), tmp_path)
    assert f"{cut}: " in err and "truncated" in err
    # Cut where a member ends: no tar error, but the end-of-archive marker is missing.
    boundary = tmp_path / "boundary.tar"
    boundary.write_bytes(data[: 512 + 512 * -(-len(png()) // 512)])
    with pytest.raises(DataFormatError, match=r"boundary\.tar: truncated tar: no end-of-archive"):
        open_source(boundary)


def test_undecodable_member_is_one_line_naming_it(tmp_path, capsys):
    shard = write_tar(tmp_path / "bad.tar", {"a.png": png(), "b.jpg": b"not a jpeg at all"})
    source = open_source(shard)
    with pytest.raises(BadImageError, match=r"bad.tar:b.jpg: not a recognised image format"):
        source.load(1)
    err = cli_error(capsys, str(shard), tmp_path)
    assert f"{shard}:b.jpg: not a recognised image format" in err


def test_empty_shards_and_patterns_that_match_nothing_name_the_path(tmp_path, capsys):
    empty = write_tar(tmp_path / "empty.tar", {})
    assert "empty.tar: holds no image samples" in cli_error(capsys, str(empty), tmp_path)
    (tmp_path / "zero.tar").write_bytes(b"")
    assert "zero.tar: empty file (0 bytes)" in cli_error(
        capsys, str(tmp_path / "zero.tar"), tmp_path
    )
    nothing = str(tmp_path / "missing-*.tar")
    assert f"{nothing}: the pattern matches no files" in cli_error(capsys, nothing, tmp_path)
    gap = str(tmp_path / "empty{,-2}.tar")
    assert "empty-2.tar: does not exist" in cli_error(capsys, gap, tmp_path)


def test_cls_labels_must_be_integers_on_every_sample(tmp_path):
    partly = write_tar(tmp_path / "partly.tar", {"a.png": png(), "a.cls": b"3", "b.png": png()})
    with pytest.raises(DataFormatError, match=r"partly\.tar:b\.png: has no \.cls label"):
        open_source(partly)
    words = write_tar(tmp_path / "words.tar", {"a.png": png(), "a.cls": b"cat"})
    with pytest.raises(DataFormatError, match=r"words\.tar: a\.cls: .* integer text"):
        open_source(words)
    labelled = write_tar(tmp_path / "ok.tar", {"a.png": png(), "a.cls": b"3\n", "a.json": b"{}"})
    assert open_source(labelled).labels.tolist() == [3]  # other fields of a sample ignored
    assert class_count(labelled) == 4


def test_a_folder_whose_name_looks_like_a_pattern_is_still_a_folder(tmp_path):
    folder = tmp_path / "photos [2020]"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "a.png")
    assert type(open_source(folder)).__name__ == "FolderSource"
    shard = write_tar(tmp_path / "one [a].tar", {"a.png": png()})
    assert len(open_source(shard)) == 1  # an existing file is not expanded as a pattern


def test_without_the_extra_a_tar_is_refused_naming_it(tmp_path, monkeypatch):
    shard = write_tar(tmp_path / "one.tar", {"a.png": png()})
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import webdataset now fails
    with pytest.raises(DataFormatError, match=r"pip install 'selfsup\[webdataset\]'"):
        open_source(shard)
