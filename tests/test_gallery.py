"""Every sweep report holds a gallery: the masks after 1, 3 and 5 clicks for the same objects in
every setting, as PNG files in the report folder and embedded in report.html."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from hrsam.interactive.evaluate import GALLERY_CLICKS, read_gallery


@pytest.mark.slow
def test_the_report_has_a_gallery_per_setting_embedded_and_showing_the_clicks(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from reports.gallery import draw
    from tests.helpers import SWEEP_MICRO as MICRO
    from tests.helpers import sweep_in, with_keys

    args = ["grid=window_size", "model.window_size=4,8", "executor=debug"]
    r = sweep_in(tmp_path, *args, *with_keys(MICRO, "eval.max_clicks=5", "report=true"))
    assert r.returncode == 0, r.stdout + r.stderr
    report = tmp_path / "reports/out/window_size"
    pngs = sorted((report / "figures").glob("gallery_*.png"))
    assert [p.name for p in pngs] == ["gallery_window_size=4.png", "gallery_window_size=8.png"]
    html = (report / "report.html").read_text()
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in html  # embedded, byte for byte
    trials = sorted((tmp_path / "outputs/sweeps/window_size/trials").glob("*/gallery.npz"))
    galleries = [read_gallery(p) for p in trials]
    names = [[it.name for it in g] for g in galleries]
    assert names[0] == names[1] and 0 < len(names[0]) <= 4  # the same objects in every setting
    changed = [
        (g, r)
        for g in galleries
        for r, it in enumerate(g)
        if set(it.masks) == set(GALLERY_CLICKS) and it.ious[1] != it.ious[5]
    ]
    assert changed, "no object whose IoU changed between 1 and 5 clicks"
    items, row = changed[0]
    assert not np.array_equal(items[row].masks[1], items[row].masks[5])
    fig = draw(items, "test")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    height = pixels.shape[0]

    def panel(ax, w: int = 100, h: int = 100):  # the same size from every panel's corner
        x0, _, _, y1 = np.floor(ax.get_window_extent().extents).astype(int)
        return pixels[height - y1 : height - y1 + h, x0 : x0 + w]

    first, fifth = panel(fig.axes[row * 3]), panel(fig.axes[row * 3 + 2])
    assert first.shape == fifth.shape and not np.array_equal(first, fifth)
