"""End to end: an oracle model reaches every threshold with one click; an empty model never."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrsam.interactive import Sample, evaluate
from hrsam.models import build_model
from tests.standins import GroundTruthStandIn


def _samples(n=3):
    out = []
    for i, (h, w) in enumerate([(333, 517), (240, 200), (180, 300)][:n]):
        yy, xx = np.mgrid[:h, :w]
        gt = ((yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 2 - 5 * i) ** 2 / (w / 4) ** 2) < 1
        out.append(Sample(f"obj{i}", np.repeat(gt[..., None] * 255, 3, -1).astype(np.uint8), gt))
    return out


@pytest.mark.parametrize("protocol", ["ritm", "hrsam"])
def test_oracle_needs_one_click(protocol):
    res = evaluate(GroundTruthStandIn(), _samples(), protocol=protocol, ts=1024, max_clicks=5)
    s = res.summary()
    assert res.ious.shape == (3, 5)
    assert s["noc85"] == s["noc90"] == s["noc95"] == 1.0 and s["nof95"] == 0
    assert s["miou_at_1"] >= 0.99 and s["biou"] > 0.9
    assert all(c[0].positive for c in res.clicks)
    assert len(res.encoder_ms) == 3 and len(res.decoder_ms) == 3 * 5


def test_empty_model_fails_everything():
    res = evaluate(
        GroundTruthStandIn(empty=True), _samples(), protocol="hrsam", ts=512, max_clicks=4
    )
    s = res.summary()
    assert s["noc85"] == s["noc95"] == 4.0 and s["nof85"] == s["nof95"] == 3
    assert s["miou_at_1"] == 0.0
    # the empty model ignores clicks, so hrsam keeps clicking new positive pixels
    assert all(len(c) == 4 and all(k.positive for k in c) for c in res.clicks)


def test_real_tiny_model_runs_the_loop_with_progress():
    calls = []
    model = build_model("hrsam_tiny").eval()
    res = evaluate(
        model,
        _samples(2),
        protocol="ritm",
        ts=256,
        max_clicks=3,
        progress=lambda i, n, name: calls.append((i, n, name)),
    )
    assert res.ious.shape == (2, 3) and np.isfinite(res.ious).all()
    assert calls == [(1, 2, "obj0"), (2, 2, "obj1")]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown protocol 'focsam'; valid: ritm, hrsam"):
        evaluate(GroundTruthStandIn(), _samples(1), protocol="focsam")
    with pytest.raises(ValueError, match="ts=1000 must be a positive multiple of 16"):
        evaluate(GroundTruthStandIn(), _samples(1), ts=1000)


def test_evaluate_cli_end_to_end(tmp_path, capsys):
    from hrsam.evaluate import main

    argv = [
        "model=hrsam_tiny",
        "data.name=synthetic",
        f"data.root={tmp_path / 'syn'}",
        "data.limit=2",
        "data.size=256",
        "data.n_train=1",
        "data.n_val=2",
        "ts=256",
        "max_clicks=3",
        f"out={tmp_path / 'out'}",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "| hrsam_tiny | synthetic | 256 | hrsam |" in captured.out
    assert "2/2" in captured.err  # progress
    lines = (tmp_path / "out" / "ious.csv").read_text().splitlines()
    assert lines[0] == "name,click1,click2,click3" and len(lines) == 3
    assert (tmp_path / "out" / "clicks.csv").read_text().startswith("name,index,y,x,positive")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model=hrsam_vit_x"], "unknown preset 'hrsam_vit_x'; valid:"),
        (["protocol=focsam"], "unknown protocol 'focsam'; valid: ritm, hrsam"),
        (["data.name=davis345"], "unknown dataset 'davis345'; valid:"),
        (["ts=1000"], "ts=1000 must be a positive multiple of 16"),
        (["max_click=3"], "unknown key 'max_click'; did you mean 'max_clicks'?"),
        (["ts=big"], "ts='big' must be int"),
        (["data.name=davis", "data.root=/nonexistent"], "dataset root /nonexistent does not exist"),
        (["checkpoint=/nonexistent.pth"], "checkpoint /nonexistent.pth does not exist"),
    ],
)
def test_evaluate_cli_bad_input_exit_2(argv, message, capsys, tmp_path):
    from hrsam.evaluate import main

    assert main([*argv, f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_sat_latency_decodes_256_grid_prompts():
    from hrsam.profiling import sat_latency

    calls = []

    class Counting(GroundTruthStandIn):
        def decode(self, emb, points, labels, prev_logits=None, multimask=False):
            calls.append(points[0, 0].tolist())
            return super().decode(emb, points, labels, prev_logits, multimask)

    image = np.zeros((100, 80, 3), np.uint8)
    out = sat_latency(Counting(), image, ts=256, warmup=0)
    assert len(calls) == 256 and calls[0] == [8.0, 8.0] and calls[-1] == [248.0, 248.0]
    assert out["sat_s"] > 0 and out["encoder_ms"] > 0 and out["decoder_ms"] > 0


class _MaskEcho(GroundTruthStandIn):
    """Decodes its previous mask when it gets one, else nothing: all it can use is the mask."""

    def decode(self, emb, points, labels, prev_logits=None, multimask=False):
        low, _ = super().decode(emb, points, labels)
        return (torch.full_like(low, -10.0) if prev_logits is None else prev_logits), None


def test_oracle_mask_test_and_native_size_marking():
    """The oracle-mask test feeds the ideal ground-truth mask with the first click: a model
    that only echoes its previous mask gains the mask's whole IoU, a model that ignores it
    gains nothing. An evaluation at a ts above an object's native long side is counted as
    upsampled; at or below it is not."""
    samples = _samples()  # long sides 517, 240, 300
    echo = evaluate(_MaskEcho(), samples, protocol="hrsam", ts=256, max_clicks=3).summary()
    assert echo["miou_at_1"] == 0.0 and echo["oracle_miou"] > 0.97
    assert echo["oracle_gain"] == pytest.approx(echo["oracle_miou"])
    blind = evaluate(GroundTruthStandIn(), samples, protocol="hrsam", ts=256, max_clicks=3)
    assert blind.summary()["oracle_gain"] == pytest.approx(0.0, abs=1e-12)
    assert blind.native == [517, 240, 300]
    assert blind.upsampled == 1 and blind.summary()["upsampled"] == pytest.approx(1 / 3)  # 240
    at_native = evaluate(GroundTruthStandIn(), samples[1:2], protocol="hrsam", ts=240 // 16 * 16)
    assert at_native.upsampled == 0 and at_native.summary()["upsampled"] == 0.0
