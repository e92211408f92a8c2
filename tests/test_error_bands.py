"""`benchmarks.error_bands`: the distance to the outline against a brute-force one, the band
counts and corrections on masks made by hand, and the probe's run at micro scale."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.error_bands import BANDS, band_errors, iou_without, main, outline_distance
from hrsam.interactive.evaluate import read_ious
from hrsam.interactive.metrics import iou
from tests.test_pretrain import micro_recipe


def test_outline_distance_is_the_distance_to_the_other_side():
    rng = np.random.default_rng(0)
    gt = rng.random((12, 15)) < 0.4
    ys, xs = np.mgrid[:12, :15]
    want = np.zeros(gt.shape)
    for y, x in zip(ys.ravel(), xs.ravel(), strict=True):
        other = gt != gt[y, x]
        want[y, x] = np.sqrt((ys[other] - y) ** 2 + (xs[other] - x) ** 2).min()
    np.testing.assert_allclose(outline_distance(gt), want)


def test_band_counts_and_corrections():
    gt = np.zeros((64, 64), bool)
    gt[8:56, 8:56] = True
    pred = gt.copy()
    pred[8:56, 4:8] = True  # a 4 px fringe outside the left side: 1-4 px from the outline
    pred[30:34, 30:34] = False  # a hole 22-23 px deep inside
    dist = outline_distance(gt)
    assert band_errors(pred, gt, dist) == [192, 192, 192, 208]
    assert len(BANDS) == 3
    assert iou_without(pred, gt, dist, 4) == iou(np.where(dist > 4, pred, gt), gt)
    assert iou_without(pred, gt, dist, 4) == (2304 - 16) / 2304  # only the hole is left
    assert iou_without(pred, gt, dist, 0) == iou(pred, gt)


def test_error_bands_runs_on_the_committed_base(tmp_path, capsys):
    recipe = micro_recipe(tmp_path)
    args = ["hrsam_tiny", "--recipe", str(recipe), "--ts", "64", "--clicks", "2", "--limit", "2"]
    assert main([*args, "--out", str(tmp_path / "ious")]) == 0
    out = capsys.readouterr().out
    assert "2 val objects" in out and "the ideal ts/4 mask:" in out
    assert "| model |" in out and "| ideal ts/4 |" in out and "noc90" in out
    objects, ious = read_ious(tmp_path / "ious" / "ious.csv")
    assert len(objects) == 2 and ious.shape == (2, 2)
    # the same curves as the evaluation's own loop on those objects
    from ablations.pretrain import data_config, load_recipe
    from hrsam import pretrained
    from hrsam.interactive.evaluate import evaluate
    from hrsam.models import build_model

    model = build_model("hrsam_tiny")
    model.load_state_dict(pretrained.load_state("hrsam_tiny"))
    val = data_config(load_recipe(recipe)).build("val")
    want = evaluate(model.eval(), [val[0], val[1]], ts=64, max_clicks=2)
    assert objects == want.names and np.array_equal(ious, want.ious)


def test_error_bands_reads_a_state_with_the_refine_path(tmp_path, capsys):
    """``--refine`` builds the state's T/2 path: the base with a trained refine, saved as a
    training state, gives other curves than the base; without ``--refine`` its keys are refused."""
    import torch

    from hrsam import pretrained
    from hrsam.models import build_model

    recipe = micro_recipe(tmp_path)
    model = build_model("hrsam_tiny", refine=8)
    model.load_state_dict(pretrained.load_state("hrsam_tiny"), strict=False)
    with torch.no_grad():
        model.mask_decoder.detail_refine.conv2.bias.fill_(-3.0)  # every pixel pushed outside
    torch.save({"state_dict": model.state_dict()}, tmp_path / "last.pt")
    args = ["hrsam_tiny", "--recipe", str(recipe), "--ts", "64", "--clicks", "2", "--limit", "2"]
    state = ["--state", str(tmp_path / "last.pt")]
    assert main([*args, *state, "--refine", "8", "--out", str(tmp_path / "r")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    _, refined = read_ious(tmp_path / "r" / "ious.csv")
    _, base = read_ious(tmp_path / "b" / "ious.csv")
    assert (refined < base).any()
    with pytest.raises(RuntimeError, match="detail_refine"):
        main([*args, *state])
