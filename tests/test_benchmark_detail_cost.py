"""The detail-path cost benchmark times one model with and without the path, and checks first
that the rows draw the same masks."""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks import detail_cost


def test_rows_pair_one_model_with_and_without_the_path(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["--detail", "0", "8", "--refine", "4", "--ts", "64", "--train-ts", "64", "--steps",
            "3", "--warmup", "1", "--reps", "3", "--out", str(out), "--data-root",
            str(tmp_path / "d")]  # fmt: skip
    assert detail_cost.main(argv) == 0
    rows = list(csv.DictReader((out / "detail_cost.csv").open()))
    timed = {r["detail"]: r for r in rows if r["encode_ms"]}
    assert set(timed) == {"0", "8", "8+r4"}
    plain, path, refine = timed["0"], timed["8"], timed["8+r4"]
    assert int(plain["path_params"]) == 0 and int(path["path_params"]) > 0
    assert int(path["params"]) - int(plain["params"]) == int(path["path_params"])
    assert int(refine["path_params"]) - int(path["path_params"]) == (1 + 8) * 4 * 9 + 4 + 4 * 9 + 1
    assert float(path["encoder_gflop"]) > float(plain["encoder_gflop"])
    assert all(float(r[k]) > 0 for r in timed.values() for k in ("encode_ms", "click_ms"))
    steps = [r for r in rows if r["train_step_ms"]]
    assert sorted(r["detail"] for r in steps) == ["0", "8", "8+r4"]
    ratios = [r for r in rows if r["part"]]
    assert sorted((r["detail"], r["part"]) for r in ratios) == [
        (w, p) for w in ("8", "8+r4") for p in ("click", "encode", "train step")
    ]
    for r in ratios:
        assert float(r["lo"]) <= float(r["ratio"]) <= float(r["hi"])
    md = (out / "detail_cost.md").read_text()
    assert "detail 8+r4 against none, train step at ts 64" in md
    assert "| 8+r4   | 64 |" in capsys.readouterr().out


def test_the_same_mask_check_sees_a_trained_path():
    rows = detail_cost.build_rows("hrsam_tiny", [0, 8], seed=0, training=False, refine=4)
    assert detail_cost.same_masks(rows, 64, seed=0) == 0.0  # the paths start at zero
    for row, layer in (("8+r4", "detail_refine"), ("8", "detail_fuse")):
        with torch.no_grad():
            getattr(rows[row].mask_decoder, layer).conv2.bias.fill_(0.5)
        assert detail_cost.same_masks(rows, 64, seed=0) > 1e-3, row
        with torch.no_grad():
            getattr(rows[row].mask_decoder, layer).conv2.bias.zero_()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--detail", "16"], "--detail [16]: must hold 0"),
        (["--ts", "100"], "--ts 100: must be a multiple of 16"),
        (["--reps", "2", "--warmup", "3"], "must be more than --warmup"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        detail_cost.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
