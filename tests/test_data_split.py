"""`selfsup data split`: a labelled source as train.npz and val.npz, every class's hold-out
apart, the images' bytes kept (same pixels), and a clear error where a split cannot be made."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.data import DataFormatError, open_source
from selfsup.data.split import holdout_rows, split_source
from selfsup.demo import sample_path


def image_folder(root: Path, per_class: dict[str, int]) -> Path:
    """An ImageFolder tree of random images, JPEG and PNG alternating."""
    rng = np.random.default_rng(0)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (10 + i, 14, 3), dtype=np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(root / name / f"{i:03d}{suffix}")
    return root


def test_split_holds_out_n_of_every_class_with_the_same_pixels(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", {"cat": 7, "dog": 5, "eel": 4})
    out = tmp_path / "split"
    assert main(["data", "split", str(folder), "--out", str(out), "--holdout", "2",
                 "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"--data {out / 'train.npz'} --test {out / 'val.npz'}" in printed
    source, train, val = (open_source(p) for p in (folder, out / "train.npz", out / "val.npz"))
    assert len(train) == 10 and len(val) == 6
    assert np.bincount(val.labels).tolist() == [2, 2, 2]
    assert np.bincount(train.labels).tolist() == [5, 3, 2]
    assert train.class_names == val.class_names == ["cat", "dog", "eel"]
    # Every source image lands in exactly one part, decoding to its own pixels (PNG and JPEG
    # bytes are kept as they are).
    parts = [(train, i) for i in range(len(train))] + [(val, i) for i in range(len(val))]
    matched = []
    for index in range(len(source)):
        pixels = source.load(index)
        found = [
            (part, i) for part, i in parts
            if part.load(i).shape == pixels.shape and np.array_equal(part.load(i), pixels)
        ]  # fmt: skip
        assert len(found) == 1, source.name(index)
        assert found[0][0].labels[found[0][1]] == source.labels[index]
        matched.append(found[0])
    assert len(set((id(p), i) for p, i in matched)) == len(source)


def test_fraction_seed_and_last_choose_the_rows():
    labels = np.repeat([0, 1, 2], [10, 20, 5])
    held = holdout_rows(labels, 0.2, seed=0)
    assert np.bincount(labels[held]).tolist() == [2, 4, 1]  # rounded, at least one
    assert np.array_equal(held, holdout_rows(labels, 0.2, seed=0))  # seeded: the same rows
    assert not np.array_equal(held, holdout_rows(labels, 0.2, seed=1))
    last = holdout_rows(labels, 3, seed=None)  # the last three of each class, in order
    assert last.tolist() == [7, 8, 9, 27, 28, 29, 32, 33, 34]


def test_split_keeps_masks_and_refuses_what_cannot_be_split(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    masks = (np.arange(64)[None] < np.arange(12)[:, None]).reshape(12, 8, 8).astype(np.uint8)
    labels = np.arange(12) % 3
    np.savez(tmp_path / "masked.npz", images=images, masks=masks, labels=labels)
    written = split_source(open_source(tmp_path / "masked.npz"), tmp_path / "m", 1, None,
                           progress=False)  # fmt: skip
    assert list(written.values()) == [9, 3]
    val = open_source(tmp_path / "m" / "val.npz")
    # The last of each class; with masks, images stay decoded beside them (packed JPEG
    # carries no masks).
    assert val.masks is not None and val.masks.sum(axis=(1, 2)).tolist() == [9, 10, 11]
    assert np.array_equal(val.load(0), images[9])
    # No labels: nothing to hold out per class.
    np.savez(tmp_path / "plain.npz", images=images)
    with pytest.raises(DataFormatError, match="has no labels"):
        split_source(open_source(tmp_path / "plain.npz"), tmp_path / "p", 1)
    # A class that would keep nothing is named.
    sample = str(sample_path("test"))
    for holdout, message in (("100", "class airplane has 100 images; holding out 100"),
                             ("2.5", "hold-out 2.5: must be a whole count")):  # fmt: skip
        assert main(["data", "split", sample, "--out", str(tmp_path / "s"), "--holdout",
                     holdout, "--quiet"]) == 2  # fmt: skip
        assert message in capsys.readouterr().err
    # An earlier split is never overwritten.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "val.npz").write_bytes(b"mine")
    assert main(["data", "split", sample, "--out", str(tmp_path / "s"), "--holdout", "1",
                 "--quiet"]) == 2  # fmt: skip
    assert "val.npz: already there" in capsys.readouterr().err
    assert (tmp_path / "s" / "val.npz").read_bytes() == b"mine"
