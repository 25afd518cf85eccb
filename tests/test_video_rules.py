"""Clip-wide rules of the object masks: each that touches frames is recorded, with the count
and the reason, in the log, `scores.json` and the printed lines; and the followed subject
before a background of two depths (parallax)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from selfsup.cli import main
from selfsup.video.evaluate import jaccard
from selfsup.video.rules import RuleLog
from selfsup.video.segment import motion_masks
from tests.test_video import SMALL, H, W, synthetic_clip, texture, write_frames

cv2 = pytest.importorskip("cv2")


def test_frames_where_nothing_moves_are_counted():
    """The camera pans over a still scene: no frame has motion evidence, and each is
    counted. (Without the pan every frame would repeat the first and be counted so.)"""
    clip, _ = synthetic_clip(moving=False)
    log = RuleLog()
    assert not motion_masks(clip, SMALL, log).any()
    assert log.frames("nothing_moved") == len(clip)
    assert log.frames("camera_misjudged") == 0  # rules that did not fire are not listed
    assert [e["rule"] for e in log.entries] == ["nothing_moved"]


def test_the_masks_command_records_and_prints_the_rules(tmp_path, capsys):
    clip, _ = synthetic_clip(frames=6)
    write_frames(tmp_path / "clip", np.repeat(clip, 2, axis=0))  # every frame twice
    args = ["video", "masks", str(tmp_path / "clip"), "--out", str(tmp_path / "out"), "--size",
            "96", "--quiet", "flow_size=96", "min_residual=1", "morph_kernel=3"]  # fmt: skip
    assert main(args) == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    rules = {e["rule"]: e for e in scores["videos"][0]["rules"]}
    assert rules["repeated_frames"]["frames"] == 6 and "take its mask" in rules[
        "repeated_frames"]["why"]  # fmt: skip
    assert "repeated_frames: 6 frames: under" in capsys.readouterr().out


def parallax_clip(frames=10, far=1, near=4, horizon=66, seed=0):
    """The camera travels right past a background of two depths: a far hillside (the rows
    above `horizon`) slides `far` px a frame, near rocks (the rows below, the whole bottom of
    the border band) `near` px; a textured object in the middle is followed, still in the
    frame. Frames and true masks."""
    hill = texture((H, W + far * frames + 8), seed)
    rocks = texture((H, W + near * frames + 8), seed + 5)
    thing = texture((30, 36), seed + 1)
    truth = np.zeros((frames, H, W), bool)
    truth[:, 30:60, 46:82] = True
    clip = []
    for t in range(frames):
        frame = hill[:, far * t : far * t + W].copy()
        frame[horizon:] = rocks[horizon:, near * t : near * t + W]
        frame[truth[t]] = thing.reshape(-1, 3)
        clip.append(frame)
    return np.stack(clip), truth


def test_a_followed_subject_is_found_against_a_background_of_two_depths():
    """One homography fitted to the band bends between the two layers (a tilted plane:
    -4 px a frame at the bottom, -2 at the hillside, which moves -1): the hillside's residual
    passes for motion and a third of it is masked (J 0.28 measured). With a layer per depth
    the object, 1 px from the hillside's motion, is found alone (J 0.98 measured), and the
    log says in how many frames two layers were fitted."""
    clip, truth = parallax_clip()
    one = motion_masks(clip, replace(SMALL, background_layers=1))
    log = RuleLog()
    two = motion_masks(clip, replace(SMALL, background_layers=2), log)
    assert jaccard(one, truth).mean() < 0.5
    assert (one & ~truth)[:, :66].mean() > 0.2  # the far hillside taken for moving
    assert jaccard(two, truth).mean() > 0.9
    assert log.frames("background_layers") >= len(clip) - 1  # every forward flow


def test_masks_do_not_depend_on_what_the_process_drew_before(real_data):
    """Two background layers are split by k-means, whose k-means++ start draws from OpenCV's
    per-thread RNG. A video's masks must not depend on that RNG's state (which videos the
    process, or a Ray worker, handled before): goat's layers, with the RNG left at two
    different states, give the same masks (they differed before the draw was seeded)."""
    from selfsup.video.motion import MotionMaskConfig
    from selfsup.video.reader import ReadOptions, read_video

    clip = read_video(real_data / "video" / "davis2016" / "JPEGImages" / "480p" / "goat",
                      ReadOptions(), min_frames=2)[:20]  # fmt: skip
    runs = []
    for state in (1, 2):
        cv2.setRNGSeed(state)
        runs.append(motion_masks(clip, MotionMaskConfig()))  # the defaults: two layers
    assert runs[0].any() and np.array_equal(runs[0], runs[1])
