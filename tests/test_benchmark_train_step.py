"""The training-step profile computes what `hrsam.train.loop.train` computes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from benchmarks.train_step import PARTS, Trainer, paired, summarize
from hrsam.data import build_dataset
from hrsam.models import build_model
from hrsam.train.loop import TrainConfig, train


def test_profiled_steps_equal_the_training_loop(tmp_path):
    data = build_dataset(
        "synthetic", str(tmp_path / "d"), split="train", n_train=4, n_val=1, size=64
    )
    kw = dict(gamma=0.8, max_clicks=3, loss_rounds="last")  # the B.3 step Trainer times
    cfg = TrainConfig(steps=4, ts=64, lr=1e-3, warmup=1, **kw)
    torch.manual_seed(0)
    model = build_model("hrsam_tiny")
    twin, generic, unfused = (copy.deepcopy(model) for _ in range(3))
    state = train(model, data, cfg, tmp_path / "run", resume=False)
    torch.manual_seed(cfg.seed)  # as train() seeds before its first step
    profiled = Trainer(twin, data, cfg)
    earlier = [Trainer(generic, data, cfg, "generic"), Trainer(unfused, data, cfg, "unfused")]
    for _ in range(cfg.steps):
        for tr in [profiled, *earlier]:
            tr.run_step()
    assert profiled.losses == pytest.approx(state.losses, rel=1e-5, abs=1e-6)
    for tr in earlier:
        assert tr.losses == pytest.approx(state.losses, rel=1e-5, abs=1e-6), tr.variant
    for a, b in zip(twin.parameters(), model.parameters(), strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    s = summarize(profiled, warmup=1)
    assert all(s[p] >= 0 for p in PARTS) and s["enc bwd"] > 0 and s["enc fwd"] > 0
    assert s["step"] >= max(s[p] for p in PARTS)

    pairs = paired({"default": profiled, **{tr.variant: tr for tr in earlier}}, warmup=1)
    assert [(r["variant"], r["part"]) for r in pairs] == [
        ("generic", "enc bwd"),
        ("generic", "step"),
        ("unfused", "enc bwd"),
        ("unfused", "step"),
    ]
    before = np.array([s["enc bwd"] for s in earlier[1].parts[1:]])
    after = np.array([s["enc bwd"] for s in profiled.parts[1:]])
    geo = float(np.exp(np.log(before / after).mean()))
    r = pairs[2]
    assert r["steps"] == cfg.steps - 1 and r["ratio"] == pytest.approx(geo, abs=1e-3)
    assert r["lo"] <= r["ratio"] <= r["hi"]
