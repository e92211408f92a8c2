"""Metrics on hand-computed IoU matrices; the clicker on hand-built masks."""

from __future__ import annotations

import numpy as np
import pytest

from hrsam.interactive.clicker import Click, distance, next_click
from hrsam.interactive.metrics import (
    boundary_iou,
    iou,
    miou_at,
    noc,
    nof,
    nof_strict,
    summarize,
)

# 3 objects x 5 clicks
IOUS = np.array(
    [
        [0.50, 0.86, 0.91, 0.96, 0.97],  # reaches 85 at 2, 90 at 3, 95 at 4
        [0.10, 0.20, 0.30, 0.40, 0.89],  # reaches 85 at the last click only, never 90
        [0.95, 0.10, 0.10, 0.10, 0.10],  # 95 at the first click
    ]
)


def test_noc_nof_miou_hand_computed():
    assert noc(IOUS, 0.85).tolist() == [2, 5, 1]
    assert noc(IOUS, 0.90).tolist() == [3, 5, 1]
    assert noc(IOUS, 0.95).tolist() == [4, 5, 1]
    # NoF counts NoC == max_clicks: object 1 at 85 (reached exactly at the last click) too
    assert nof(IOUS, 0.85) == 1 and nof_strict(IOUS, 0.85) == 0
    assert nof(IOUS, 0.90) == 1 and nof_strict(IOUS, 0.90) == 1
    assert miou_at(IOUS, 1) == pytest.approx((0.5 + 0.1 + 0.95) / 3)
    assert miou_at(IOUS, 5) == pytest.approx((0.97 + 0.89 + 0.1) / 3)
    s = summarize(IOUS)
    assert s["noc90"] == pytest.approx(3.0) and s["nof95"] == 1 and "miou_at_10" not in s
    assert noc(IOUS, 0.85, max_clicks=3).tolist() == [2, 3, 1]
    # never reached -> max_clicks, exactly
    assert noc(np.zeros((2, 20)), 0.85).tolist() == [20, 20]


def test_iou_excludes_ignore_pixels():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 object pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True  # 6 predicted, 2 false positives at column 2
    assert iou(pred, gt) == pytest.approx(4 / 6)
    ignore = np.zeros((4, 4), bool)
    ignore[:, 2] = True
    assert iou(pred, gt, ignore) == pytest.approx(1.0)
    assert iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 0.0


def test_boundary_iou():
    gt = np.zeros((100, 100), bool)
    gt[20:80, 20:80] = True
    assert boundary_iou(gt, gt) == 1.0
    shifted = np.roll(gt, 5, axis=1)
    assert 0.2 < boundary_iou(shifted, gt) < 0.9
    assert boundary_iou(shifted, gt) < iou(shifted, gt)


def test_boundary_band_equals_the_dense_max_pool_reference():
    """The fast erosion gives the same band as the dense max-pool, on random shapes touching
    the border, several sizes and band widths."""
    from hrsam.interactive.metrics import boundary, boundary_reference

    rng = np.random.default_rng(0)
    for h, w, ratio in ((64, 80, 0.02), (120, 97, 0.05), (33, 200, 0.1), (50, 50, 0.001)):
        m = rng.random((h // 4 + 1, w // 4 + 1)) > 0.5
        m = np.kron(m, np.ones((4, 4), bool))[:h, :w]
        assert np.array_equal(boundary(m, ratio), boundary_reference(m, ratio))
        full = np.ones((h, w), bool)  # everything inside: only the border band remains
        assert np.array_equal(boundary(full, ratio), boundary_reference(full, ratio))


def test_distance_counts_the_border_as_outside():
    m = np.ones((5, 7), bool)
    d = distance(m)
    assert d.max() == 3.0 and d[0, 0] == 1.0 and d[2, 3] == 3.0


def _blobs(rng, shape=(48, 64)):
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random(shape), rng.uniform(1, 4))
    return noise > np.quantile(noise, rng.uniform(0.3, 0.8))


def test_opencv_distance_matches_scipy_and_clicks_differ_only_at_exact_ties(monkeypatch):
    """The OpenCV transform (the official clicker's, the `ritm` reference as in RITM) against
    SciPy's exact float64 EDT.

    Distances agree within float32 rounding. The clicks agree, except where the float64 distances
    themselves tie: OpenCV's float32 values can order two pixels at exactly the same distance
    either way (OpenCV 5 does, at some ties, where 4.x did not), and then either is a correct
    click. Every disagreement is checked to be such a tie; a click off the float64 maximum, or
    with the wrong sign, fails.
    """
    import cv2  # noqa: F401  (a dependency: the fast path must be the one tested)
    from scipy import ndimage

    from hrsam.interactive import clicker

    rng = np.random.default_rng(0)
    clicks, excused = [], 0
    for _ in range(150):
        gt, pred = _blobs(rng), _blobs(rng)
        clicked = rng.random(gt.shape) < 0.02
        exact = _scipy_distance(gt ^ pred)
        d32 = distance(gt ^ pred)
        assert np.all(np.abs(d32 - exact) <= 2 * np.finfo(np.float32).eps * np.maximum(exact, 1))
        for protocol in ("ritm", "hrsam"):
            args = (gt, pred, clicked, protocol)
            fast = next_click(*args, rng=np.random.default_rng(1), inner_k=1.7)
            with monkeypatch.context() as m:
                m.setattr(clicker, "_edt", ndimage.distance_transform_edt)
                slow = next_click(*args, rng=np.random.default_rng(1), inner_k=1.7)
            clicks.append(fast)
            if fast != slow:
                _assert_exact_tie(gt, pred, clicked, protocol, fast, slow)
                excused += 1
    assert len({(c.y, c.x) for c in clicks if c}) > 100
    assert excused <= 0.05 * len(clicks), f"{excused} of {len(clicks)} clicks differ"


def _assert_exact_tie(gt, pred, clicked, protocol, fast, slow):
    """``fast`` and ``slow`` differ only because float64 distances tie exactly."""
    fn, fp = gt & ~pred, ~gt & pred
    if protocol == "ritm":
        d_fn, d_fp = _scipy_distance(fn) * ~clicked, _scipy_distance(fp) * ~clicked
    else:
        d_fn, d_fp = _scipy_distance(fn & ~clicked), _scipy_distance(fp & ~clicked)
    assert fast is not None and slow is not None
    if fast.positive != slow.positive:  # the sign flips only when both maxima tie
        assert d_fn.max() == d_fp.max(), (fast, slow)
        return
    d = d_fn if fast.positive else d_fp
    if protocol == "ritm":  # both are float64 maxima: a tie at the maximum
        assert d[fast.y, fast.x] == d[slow.y, slow.x] == d.max(), (fast, slow)
    else:  # both drawn from the candidates; the two sets differ only at exact ties
        thr = d.max() / (1.7 + np.finfo(np.float32).eps)
        assert d[fast.y, fast.x] > thr * (1 - 1e-6) and d[slow.y, slow.x] > thr * (1 - 1e-6)


def _scipy_distance(mask):
    from scipy import ndimage

    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


@pytest.mark.parametrize("protocol", ["ritm", "hrsam"])
def test_first_click_is_positive_at_the_interior_maximum(protocol):
    gt = np.zeros((20, 30), bool)
    gt[2:11, 5:20] = True  # 9 rows: the centre row 6 is 5 px from top and bottom
    c = next_click(gt, np.zeros_like(gt), np.zeros_like(gt), protocol)
    assert c.positive and c.y == 6 and 9 <= c.x <= 15


def test_ritm_tie_between_fn_and_fp_is_negative():
    gt = np.zeros((20, 40), bool)
    gt[5:10, 5:10] = True  # FN square 5x5 (prediction misses it)
    pred = np.zeros_like(gt)
    pred[5:10, 25:30] = True  # FP square 5x5 of the same size
    c = next_click(gt, pred, np.zeros_like(gt), "ritm")
    assert c == Click(7, 27, False)


def test_ritm_first_row_major_maximum_wins():
    gt = np.zeros((10, 10), bool)
    gt[2:5, 2:8] = True  # 3 rows: row 3 ties along its interior
    c = next_click(gt, np.zeros_like(gt), np.zeros_like(gt), "ritm")
    assert (c.y, c.x) == (3, 3)


def test_error_touching_the_border_is_not_pulled_to_the_border():
    gt = np.zeros((30, 30), bool)
    gt[:, :10] = True  # touches the left, top and bottom borders
    c = next_click(gt, np.zeros_like(gt), np.zeros_like(gt), "ritm")
    assert c.x == 4 or c.x == 5
    assert 4 <= c.y <= 25  # 5 px from every border, not on it


def test_hrsam_repels_from_earlier_clicks_and_is_seeded():
    yy, xx = np.mgrid[:41, :41]
    gt = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    clicked[20, 20] = True  # an ignored earlier click at the centre
    ritm = next_click(gt, pred, clicked, "ritm")
    assert abs(ritm.y - 20) + abs(ritm.x - 20) == 1  # RITM: the neighbour
    picks = {
        next_click(gt, pred, clicked, "hrsam", rng=np.random.default_rng(s)) for s in range(20)
    }
    for c in picks:
        assert 6 <= ((c.y - 20) ** 2 + (c.x - 20) ** 2) ** 0.5 <= 9  # about half the radius away
    assert len(picks) > 1  # the tie is broken at random...
    a = next_click(gt, pred, clicked, "hrsam", rng=np.random.default_rng(7))
    b = next_click(gt, pred, clicked, "hrsam", rng=np.random.default_rng(7))
    assert a == b  # ...reproducibly


def test_ignore_pixels_never_receive_clicks():
    gt = np.zeros((20, 20), bool)
    gt[2:18, 2:18] = True
    ignore = np.zeros_like(gt)
    ignore[5:15, 5:15] = True  # the deepest part of the object is ignored
    c = next_click(gt, np.zeros_like(gt), np.zeros_like(gt), "ritm", ignore=ignore)
    assert not ignore[c.y, c.x] and gt[c.y, c.x]


def test_nothing_left_to_click_and_bad_protocol():
    gt = np.zeros((8, 8), bool)
    gt[2:5, 2:5] = True
    assert next_click(gt, gt.copy(), np.zeros_like(gt), "ritm") is None
    with pytest.raises(ValueError, match="unknown protocol 'simpleclick'; valid: ritm, hrsam"):
        next_click(gt, gt, gt, "simpleclick")


def test_click_use_diagnostics_match_a_hand_computation():
    """Two objects, 5 clicks. Object A: +,-,-,+,- ; object B: +,+,- then the clicker stopped
    (perfect mask): its IoU row stays flat and only its 3 clicks count."""
    from hrsam.interactive.metrics import click_deltas, click_use, mean_interval

    ious = np.array(
        [
            [0.50, 0.60, 0.55, 0.70, 0.80],
            [0.90, 0.95, 1.00, 1.00, 1.00],
        ]
    )
    labels = [[True, False, False, True, False], [True, True, False]]
    deltas, positive = click_deltas(ious, labels)
    assert np.allclose(deltas, [0.10, -0.05, 0.15, 0.10, 0.05, 0.05])
    assert positive.tolist() == [False, False, True, False, True, False]
    out = click_use(ious, labels, oracle=np.array([0.70, 0.85]))
    assert out["click_gain"] == pytest.approx(((0.80 - 0.50) + (1.00 - 0.90)) / 2)
    # negative clicks: A's 2nd (+0.10), 3rd (-0.05), 5th (+0.10); B's 3rd (+0.05)
    assert out["neg_click_delta"] == pytest.approx((0.10 - 0.05 + 0.10 + 0.05) / 4)
    assert out["pos_click_delta"] == pytest.approx((0.15 + 0.05) / 2)
    assert out["harmful_clicks"] == pytest.approx(1 / 6)
    assert out["oracle_miou"] == pytest.approx(0.775)
    assert out["oracle_gain"] == pytest.approx(((0.70 - 0.50) + (0.85 - 0.90)) / 2)
    assert out["click_gain_lo"] <= out["click_gain"] <= out["click_gain_hi"]
    # the interval: percentile bootstrap of the per-object gains, the reports' own
    mean, lo, hi = mean_interval(ious[:, 4] - ious[:, 0])
    assert (out["click_gain"], out["click_gain_lo"], out["click_gain_hi"]) == (mean, lo, hi)
    assert lo == pytest.approx(0.10) and hi == pytest.approx(0.30)
    # no corrective click at all: the deltas are NaN, not 0
    flat = click_use(np.array([[1.0, 1.0]]), [[True]])
    assert np.isnan(flat["neg_click_delta"]) and np.isnan(flat["harmful_clicks"])
