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


def test_a_video_read_from_a_first_frame_is_the_tail_of_the_whole_read(tmp_path):
    from dataclasses import replace

    import cv2

    from selfsup.video.reader import ReadOptions, count_frames, read_video
    from tests.test_video import write_avi

    clip, _ = synthetic_clip(frames=11)
    write_frames(tmp_path / "folder", clip)
    write_avi(tmp_path / "file.avi", clip)
    np.savez(tmp_path / "raw.npz", images=clip)
    blobs = [cv2.imencode(".jpg", f)[1].ravel() for f in clip]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
    np.savez(tmp_path / "packed.npz", jpeg=np.concatenate(blobs), offsets=offsets)
    for name in ("folder", "file.avi", "raw.npz", "packed.npz"):
        for options in (ReadOptions(), ReadOptions(stride=2, size=48), ReadOptions(max_frames=4)):
            whole = read_video(tmp_path / name, options)
            assert count_frames(tmp_path / name, options) == len(whole), (name, options)
            every = read_video(tmp_path / name, replace(options, max_frames=None))
            for first in (1, 3):  # max_frames counts from the first frame read
                tail = read_video(tmp_path / name, options, first=first)
                expected = every[first : first + (options.max_frames or len(every))]
                np.testing.assert_array_equal(tail, expected, err_msg=f"{name} {first}")
        past = read_video(tmp_path / name, ReadOptions(), min_frames=0, first=11)
        assert len(past) == 0  # a chunk past the end: nothing, not an error


def test_chunks_cover_a_video_once_and_never_leave_a_single_frame(tmp_path):
    from selfsup.video.jobs import Piece, chunks

    video = tmp_path / "long.mp4"
    video.write_bytes(b"")
    assert chunks(video, 10, 0) == chunks(video, 4, 4) == [Piece(video)]
    pieces = chunks(video, 10, 4)
    assert [(p.first, p.frames) for p in pieces] == [(0, 4), (4, 4), (8, None)]
    assert [p.name for p in pieces] == ["long@0000000", "long@0000004", "long@0000008"]
    assert [(p.first, p.frames) for p in chunks(video, 9, 4)] == [(0, 4), (4, None)]
    assert "kept frames 4-end" in str(chunks(video, 9, 4)[1])


def test_no_more_tasks_in_flight_than_the_limit_and_each_runs_once():
    from selfsup.video.jobs import in_flight

    running, most, done = set(), 0, []

    def submit(video):
        nonlocal most
        running.add(video)
        most = max(most, len(running))
        return video

    def gather(handles):  # the oldest finishes first
        running.discard(handles[0])
        return handles[:1]

    in_flight(list(range(100)), submit, gather, lambda h: {"ok": h}, 6,
              lambda video, outcome: done.append((video, outcome["ok"])))  # fmt: skip
    assert most == 6 and sorted(done) == [(i, i) for i in range(100)]


def test_a_long_video_is_mined_in_chunks_that_a_rerun_finishes(tmp_path, capsys):
    from selfsup.data.patch_graph import load_patches
    from selfsup.video.cli import command_video  # noqa: F401  (the parser's settings)
    from selfsup.video.patches import PatchConfig, process_video

    clip, _ = synthetic_clip(frames=15)
    write_frames(tmp_path / "videos" / "long", clip)
    out = tmp_path / "out"
    argv = ["video", "patches", str(tmp_path / "videos"), "--out", str(out), *PATCHES]
    assert main([*argv, "--chunk-frames", "6"]) == 0
    names = sorted(p.name for p in (out / "videos").glob("*.npz"))
    assert names == ["long@0000000.npz", "long@0000006.npz", "long@0000012.npz"]
    assert "from 1 video (3 chunks)" in capsys.readouterr().out
    # Each chunk holds what mining its frames as a video of their own gives, frames counted
    # from the start of the long video.
    settings = dict(item.split("=") for item in PATCHES if "=" in item)
    for first in (0, 6, 12):
        write_frames(tmp_path / f"part{first}", clip[first : first + 6])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(s["video"], s.get("first_frame")) for s in manifest["shards"]] == [
        ("long", 0), ("long", 6), ("long", 12)
    ]  # fmt: skip
    for first in (0, 6, 12):
        from selfsup.video.cli import settings as build_settings

        cfg = build_settings(PatchConfig, [f"{k}={v}" for k, v in settings.items()],
                             {"size": 96})  # fmt: skip
        alone = process_video(tmp_path / f"part{first}", cfg, progress=False)
        chunk = arrays(out / "videos" / f"long@{first:07d}.npz")
        np.testing.assert_array_equal(chunk["images"], alone["images"])
        np.testing.assert_array_equal(chunk["frame"], alone["frame"] + first)
    combined = arrays(out / "patches.npz")
    assert list(combined["video_names"]) == ["long"] and not combined["video"].any()
    assert len(np.unique(combined["track"])) == manifest["tracks"] > 0
    shards = load_patches(out)
    np.testing.assert_array_equal(shards.video, combined["video"])
    np.testing.assert_array_equal(shards.frame, combined["frame"])
    # A chunk lost (a node died before its file was written): the rerun mines only it.
    (out / "videos" / "long@0000006.npz").unlink()
    (out / "manifest.json").unlink()
    assert main([*argv, "--chunk-frames", "6"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 3 chunks already mined" in printed and "(1 mined now)" in printed
    np.testing.assert_array_equal(arrays(out / "patches.npz")["images"], combined["images"])
    # Other chunks, other settings: refused, naming the plan.
    assert main([*argv, "--chunk-frames", "5"]) == 2
    assert "long.chunks.json: planned with other settings" in capsys.readouterr().err


def test_graph_build_on_a_shard_folder_gives_the_graph_of_the_combined_file(tmp_path, tiny_npz):
    from tests.test_graph import TINY

    videos = clips(tmp_path / "videos", count=3, frames=10)
    out = tmp_path / "patches"
    for i in range(2):
        assert main(["video", "patches", str(videos), "--out", str(out), "--shard", f"{i}/2",
                     *PATCHES]) == 0  # fmt: skip
    embed = tmp_path / "embed"
    assert main(["train", "counting", "--data", str(tiny_npz), "--out", str(embed), "--steps",
                 "1", "--quiet", *TINY]) == 0  # fmt: skip
    graphs = {}
    for source in ("shards", "combined"):
        patches = out if source == "shards" else out / "patches.npz"
        graphs[source] = tmp_path / f"{source}.npz"
        assert main(["graph", "build", "--patches", str(patches), "--embed", str(embed),
                     "--out", str(graphs[source]), "--quiet", "clusters=2", "neighbours=3",
                     "backend=torch"]) == 0  # fmt: skip
    shards, combined = arrays(graphs["shards"]), arrays(graphs["combined"])
    assert shards.keys() == combined.keys()
    for key in shards:
        if shards[key].dtype.kind in "fiub":
            np.testing.assert_array_equal(shards[key], combined[key], err_msg=key)
    assert main(["graph", "stats", str(graphs["shards"]), "--patches", str(out)]) == 0
