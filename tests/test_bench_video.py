"""bench/video.py's own ground truth: the pseudo-truth of walkers at a fixed camera that its
walkers stress set is scored against."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from selfsup.video.evaluate import jaccard, read_masks
from selfsup.video.reader import ReadOptions
from tests.test_video import texture, write_avi

cv2 = pytest.importorskip("cv2")
BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_video():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_video", BENCH / "video.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_walker_truth_is_what_differs_from_the_median_background(tmp_path):
    """A red square crosses a still textured scene: the median of the frames is the scene
    without it, so the pseudo-truth is the square in every frame (IoU measured 0.93-0.94 after
    the video's JPEG compression and the resize to 240 px)."""
    height, width, side = 96, 128, 24
    scene = texture((height, width), 0)
    frames, truth = [], []
    for t in range(12):
        frame, mask = scene.copy(), np.zeros((height, width), bool)
        mask[30 : 30 + side, 8 + 8 * t : 8 + 8 * t + side] = True
        frame[mask] = (220, 30, 30)
        frames.append(frame)
        truth.append(mask)
    write_avi(tmp_path / "walkers.avi", frames)
    folder = bench_video().write_walker_truth(tmp_path / "walkers.avi", tmp_path / "truth")
    options = ReadOptions(size=240)
    found = read_masks(folder, options, (240, 320))
    expected = np.stack([cv2.resize(m.astype(np.uint8), (320, 240)) > 0 for m in truth])
    assert found.shape == expected.shape
    assert jaccard(found, expected).min() > 0.85


def test_davis_table_has_the_twenty_val_sequences_and_the_cited_methods():
    """Measured clips fill their rows, the held-out ones stay blank, the mean is over the
    measured ones only, and FST and NLC are cited beneath with their mean J."""
    module = bench_video()
    row = {key: 0.5 for key in module.DAVIS_COLUMNS}
    scored = {"per_video": {"goat": {**row, "J": 0.25}, "libby": {**row, "J": 0.75}},
              **{f"mean_{key}": 0.5 for key in module.DAVIS_COLUMNS}}  # fmt: skip
    loo = {"per_video": {"goat": {"J": 0.2}, "libby": {"J": 0.7}}, "mean_J": 0.45}
    lines = module.davis_table(scored, loo).splitlines()
    sequences = lines[2:22]
    assert [line.split()[0] for line in sequences] == list(module.DAVIS_2016_VAL)
    goat = next(line for line in sequences if line.startswith("goat "))
    assert goat.split()[1:3] == ["0.250", "0.500"] and goat.split()[-1] == "0.200"
    assert sum("(held out)" in line for line in sequences) == 18
    dog = next(line for line in sequences if line.startswith("dog"))
    assert dog.split() == ["dog", "(held", "out)"]
    assert lines[22].startswith("mean of 2 measured") and lines[22].split()[-1] == "0.450"
    assert "FST" in lines[23] and "0.558" in lines[23] and "NLC" in lines[24]
    assert "0.551" in lines[24]
