"""benchmarks.mask_ceiling: the IoU an ideal ts/4 mask reaches through the evaluation's geometry."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.mask_ceiling import ceiling, main


def test_a_cell_aligned_object_is_representable_and_a_thin_line_is_not():
    square = np.zeros((64, 64), bool)
    square[8:40, 16:48] = True  # edges on the 4-px cells of ts 64
    assert ceiling(square, 64) > 0.99  # only the corners round off
    line = np.zeros((64, 64), bool)
    line[30, 4:60] = True  # 1 px wide: a quarter of a cell at ts 64
    assert ceiling(line, 64) < 0.5
    assert ceiling(line, 256) > 0.9  # at 4x the ts the line spans a whole cell


def test_the_ceiling_follows_the_predictor_geometry_for_odd_shapes():
    from hrsam.data.synthetic import make_sample

    _, gt = make_sample(3, 200)  # not a multiple of 32: padded, then resized
    low, high = ceiling(gt, 128), ceiling(gt, 512)
    assert 0.5 < low < high <= 1.0


def test_cli_prints_the_table_and_rejects_bad_input(tmp_path, capsys):
    root = tmp_path / "syn"
    out = tmp_path / "ceiling.md"
    argv = [f"data.root={root}", "data.size=96", "data.n_train=1", "ts=96,192", f"out={out}"]
    assert main(argv) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0")]
    from hrsam.data import DataConfig

    val = DataConfig(root=str(root), size=96, n_train=1).build("val")
    assert [r.split("|")[1].strip() for r in rows] == [s.name for s in val]  # every val object
    assert len({s.name.split("_")[0] for s in val}) == 16  # of the 16 val scenes
    values = np.array([[float(v) for v in r.split("|")[2:4]] for r in rows])
    assert ((values > 0) & (values <= 1)).all() and (values[:, 1] >= values[:, 0] - 0.02).all()
    capsys.readouterr()
    for bad, message in [
        (["ts=500"], "ts=500 must be a positive multiple of 16"),
        (["ts=a"], "ts='a' must be comma-separated integers"),
        (["data.name=davis", "data.root=/nonexistent"], "/nonexistent does not exist"),
    ]:
        assert main([*bad, f"out={tmp_path / 'x.md'}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
        assert not (tmp_path / "x.md").exists()


@pytest.mark.parametrize("ts", [64, 96])
def test_ceiling_is_one_for_the_full_canvas(ts):
    assert ceiling(np.ones((ts, ts), bool), ts) == 1.0
