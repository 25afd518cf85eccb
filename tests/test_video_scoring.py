"""The DAVIS measures of selfsup.video.evaluate against small cases computed by hand."""

import numpy as np
import pytest

from selfsup.video.evaluate import (
    boundary_map,
    boundary_measure,
    centre_box_masks,
    score_masks,
    statistics,
    tolerance_disk,
    upsample_masks,
)

pytest.importorskip("cv2")


def test_boundary_pixels_are_those_whose_east_south_or_south_east_neighbour_differs():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1:3, 1:3] = True
    expected = np.zeros((4, 4), bool)
    for y, x in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]:
        expected[y, x] = True  # the square's right and bottom edges, and the pixels before it
    np.testing.assert_array_equal(boundary_map(mask)[0], expected)


def test_tolerance_is_eight_px_at_davis_480p_and_one_px_on_a_small_frame():
    assert tolerance_disk(480, 854).shape == (17, 17)  # ceil(0.008 x 979.6) = 8
    disk = tolerance_disk(20, 20)  # ceil(0.008 x 28.3) = 1: the pixel and its 4 neighbours
    np.testing.assert_array_equal(disk, [[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_contour_precision_recall_and_f():
    """20 x 20 frames, tolerance 1 px. The truth is the top half: its boundary is row 9 (20
    px). A prediction one row lower is within the tolerance everywhere; three rows lower,
    nowhere. The top-left quarter's boundary is column 9 (rows 0-9) and row 9 (columns 0-8),
    19 px, of which 11 lie within 1 px of row 9 (row 9 and (8, 9)); of the truth's 20, the 11
    of columns 0-10 lie within 1 px of it."""
    truth = np.zeros((4, 20, 20), bool)
    truth[:, :10] = True
    pred = np.zeros_like(truth)
    pred[0, :11] = True  # one row lower
    pred[1, :13] = True  # three rows lower
    pred[2, :10, :10] = True  # the top-left quarter
    measured = boundary_measure(pred[:3], truth[:3])
    precision, recall = 11 / 19, 11 / 20
    f = 2 * precision * recall / (precision + recall)
    expected = [[1, 1, 1], [0, 0, 0], [precision, recall, f]]
    np.testing.assert_allclose(measured, expected)
    # No predicted boundary: precision 1, recall 0; no boundary in either: both 1.
    empty = np.zeros((1, 20, 20), bool)
    np.testing.assert_allclose(boundary_measure(empty, truth[:1]), [[1, 0, 0]])
    np.testing.assert_allclose(boundary_measure(empty, empty), [[1, 1, 1]])
    np.testing.assert_allclose(boundary_measure(truth[:1], empty), [[0, 1, 0]])


def test_mean_recall_and_decay_over_four_temporal_bins():
    """Eight frames: the bins are frames 0-2, 2-4, 4-5 and 5-7 (the DAVIS toolkit's edges,
    round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7, shared between neighbours); recall counts
    the frames over 0.5, not at it."""
    values = np.array([0.9, 0.8, 0.6, 0.5, 0.4, 0.2, 0.1, 0.3])
    stats = statistics(values)
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["recall"] == pytest.approx(3 / 8)
    assert stats["decay"] == pytest.approx((0.9 + 0.8 + 0.6) / 3 - (0.2 + 0.1 + 0.3) / 3)
    assert statistics(np.full(5, 0.7))["decay"] == 0


def test_masks_are_scored_at_the_truths_resolution():
    """A 12 px mask of a 6 px box comes back at 24 px as the box [6, 18) exactly (bilinear,
    then over half); the truth's 1 px line, which a truth shrunk to 12 px would lose, counts
    as missed: J = 144 / (144 + 24)."""
    small = np.zeros((1, 12, 12), bool)
    small[0, 3:9, 3:9] = True
    box = np.zeros((1, 24, 24), bool)
    box[0, 6:18, 6:18] = True
    np.testing.assert_array_equal(upsample_masks(small, (24, 24)), box)
    truth = box.copy()
    truth[0, 21] = True
    scores = score_masks(small, truth, "x")
    assert scores["J"] == pytest.approx(144 / 168)
    assert scores["truth_size"] == [24, 24] and len(scores["F_per_frame"]) == 1
    assert scores["JF"] == pytest.approx((scores["J"] + scores["F"]) / 2)
    perfect = score_masks(centre_box_masks(truth.shape), centre_box_masks(truth.shape), "x")
    assert perfect["J"] == perfect["F"] == perfect["J_centre_box"] == perfect["F_centre_box"] == 1
