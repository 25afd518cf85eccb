"""Mining videos in parts: `--shard I/N`, outputs per video that a rerun skips, failures
reported at the end with the others done (selfsup.video.jobs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from selfsup.cli import main
from selfsup.video.jobs import Shard, parse_shard
from tests.test_video import synthetic_clip, write_frames

# Small and fast: the settings of tests/test_video.py's SMALL, on the command line.
PATCHES = ["--size", "96", "--quiet", "seed_every=4", "patch_every=2", "patch_size=32",
           "masks.flow_size=96", "masks.min_residual=1", "masks.morph_kernel=3",
           "masks.min_area=0.005"]  # fmt: skip
MASKS = ["--size", "96", "--quiet", "flow_size=96", "min_residual=1", "morph_kernel=3"]


def clips(folder: Path, count: int = 3, frames: int = 6) -> Path:
    for i in range(count):
        write_frames(folder / f"v{i}", synthetic_clip(frames=frames, seed=30 * i)[0])
    return folder


def arrays(file: Path) -> dict[str, np.ndarray]:
    with np.load(file) as data:
        return {k: data[k] for k in data.files}


def test_shard_forms_are_checked_and_counted_from_zero():
    assert parse_shard("0/4") == Shard(0, 4) and parse_shard(" 3 / 4 ") == Shard(3, 4)
    for bad, says in (("4/4", "below N"), ("1/0", "at least 1"), ("1of4", "expected I/N"),
                      ("-1/4", "expected I/N"), ("1/4/2", "expected I/N")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            parse_shard(bad)


def test_shards_split_a_video_list_into_disjoint_parts_whatever_its_order(tmp_path):
    videos = [tmp_path / f"clip{i:03d}.mp4" for i in range(200)]
    parts = [[v for v in videos if Shard(i, 4).holds(v)] for i in range(4)]
    assert sorted(v for p in parts for v in p) == sorted(videos)  # each video in exactly one part
    assert all(30 < len(p) < 70 for p in parts)  # and the parts near even
    moved = [tmp_path / "elsewhere" / v.name for v in videos]  # another machine's mount
    assert [[v.name for v in moved if Shard(i, 4).holds(v)] for i in range(4)] == [
        [v.name for v in p] for p in parts
    ]


def test_shards_into_one_folder_make_the_dataset_of_one_run(tmp_path, capsys):
    videos = clips(tmp_path / "videos")
    assert main(["video", "patches", str(videos), "--out", str(tmp_path / "one"), *PATCHES]) == 0
    for i in range(3):
        argv = ["video", "patches", str(videos), "--out", str(tmp_path / "parts"), *PATCHES]
        assert main([*argv, "--shard", f"{i}/3"]) == 0
    one, parts = (
        arrays(tmp_path / "one" / "patches.npz"),
        arrays(tmp_path / "parts" / "patches.npz"),
    )
    assert one.keys() == parts.keys() and len(one["images"]) > 0
    for key in one:
        np.testing.assert_array_equal(one[key], parts[key], err_msg=key)
    per_video = sorted(p.name for p in (tmp_path / "parts" / "videos").iterdir())
    assert per_video == ["v0.npz", "v1.npz", "v2.npz"]
    capsys.readouterr()
    # A rerun finds every video done: it mines nothing and writes the same dataset.
    assert main(["video", "patches", str(videos), "--out", str(tmp_path / "parts"), *PATCHES]) == 0
    assert "(0 mined now)" in capsys.readouterr().out
    np.testing.assert_array_equal(
        arrays(tmp_path / "parts" / "patches.npz")["images"], one["images"]
    )


def test_a_failed_video_is_named_at_the_end_and_a_rerun_mines_only_it(tmp_path, capsys):
    videos = clips(tmp_path / "videos")
    (tmp_path / "videos" / "v1" / "00002.png").write_bytes(b"not a png")
    out = tmp_path / "masks"
    assert main(["video", "masks", str(videos), "--out", str(out), *MASKS]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 videos failed" in err and "00002.png" in err
    assert (out / "v0" / "result.json").is_file() and (out / "v2" / "result.json").is_file()
    assert not (out / "v1").exists() and not (out / "scores.json").exists()
    done = (out / "v0" / "masks.npz").stat().st_mtime_ns
    write_frames(tmp_path / "fixed", synthetic_clip(frames=6, seed=30)[0])
    (tmp_path / "videos" / "v1" / "00002.png").write_bytes(
        (tmp_path / "fixed" / "00002.png").read_bytes()
    )
    assert main(["video", "masks", str(videos), "--out", str(out), *MASKS]) == 0
    assert "2 of 3 videos already masked" in capsys.readouterr().out
    assert (out / "v0" / "masks.npz").stat().st_mtime_ns == done  # not masked again
    scores = json.loads((out / "scores.json").read_text())
    assert [r["video"] for r in scores["videos"]] == ["v0", "v1", "v2"]
    with np.load(out / "motion_masks.npz") as data:
        assert len(data["images"]) == 18


def test_a_folder_mined_with_other_settings_is_refused(tmp_path, capsys):
    videos = clips(tmp_path / "videos", count=1)
    out = str(tmp_path / "out")
    assert main(["video", "patches", str(videos), "--out", out, *PATCHES]) == 0
    assert main(["video", "patches", str(videos), "--out", out, *PATCHES, "patch_size=16"]) == 2
    assert "mined with other settings" in capsys.readouterr().err


def test_ray_without_ray_installed_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    videos = clips(tmp_path / "videos", count=1)
    argv = ["video", "patches", str(videos), "--out", str(tmp_path / "out"), "--ray", *PATCHES]
    assert main(argv) == 2
    assert "pip install 'selfsup[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_graph_build_reads_the_shards_as_the_combined_patch_set(tmp_path):
    from selfsup.data.patch_graph import load_patches

    videos = clips(tmp_path / "videos")
    out = tmp_path / "patches"
    for i in range(2):  # two jobs, then the one that finds every video done
        assert main(["video", "patches", str(videos), "--out", str(out), "--shard", f"{i}/2",
                     *PATCHES]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["video"] for s in manifest["shards"]] == ["v0", "v1", "v2"]
    shards, combined = load_patches(out), load_patches(out / "patches.npz")
    assert shards.path == out and len(shards.images) == manifest["patches"] > 0
    for name in ("images", "track", "frame", "video"):
        np.testing.assert_array_equal(getattr(shards, name), getattr(combined, name), name)
    assert shards.fingerprint() == combined.fingerprint()  # a graph fits either
    (out / "videos" / "v1.npz").unlink()
    with pytest.raises(ValueError, match=r"v1\.npz"):
        load_patches(out)
