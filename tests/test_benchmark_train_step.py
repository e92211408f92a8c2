"""The training-step profile computes what `hrsam.train.loop.train` computes."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.train_step import PARTS, Trainer, summarize
from hrsam.data import build_dataset
from hrsam.models import build_model
from hrsam.train.loop import TrainConfig, train


def test_profiled_steps_equal_the_training_loop(tmp_path):
    data = build_dataset(
        "synthetic", str(tmp_path / "d"), split="train", n_train=4, n_val=1, size=64
    )
    cfg = TrainConfig(steps=4, ts=64, lr=1e-3, warmup=1, gamma=0.8, max_clicks=3)
    torch.manual_seed(0)
    model = build_model("hrsam_tiny")
    twin, generic = copy.deepcopy(model), copy.deepcopy(model)
    state = train(model, data, cfg, tmp_path / "run", resume=False)
    torch.manual_seed(cfg.seed)  # as train() seeds before its first step
    profiled = Trainer(twin, data, cfg)
    before = Trainer(generic, data, cfg, "generic")
    for _ in range(cfg.steps):
        profiled.run_step()
        before.run_step()
    assert profiled.losses == pytest.approx(state.losses, rel=1e-5, abs=1e-6)
    assert before.losses == pytest.approx(state.losses, rel=1e-5, abs=1e-6)
    for a, b in zip(twin.parameters(), model.parameters(), strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    s = summarize(profiled, warmup=1)
    assert all(s[p] >= 0 for p in PARTS) and s["enc bwd"] > 0 and s["enc fwd"] > 0
    assert s["step"] >= max(s[p] for p in PARTS)
