"""The ``shift`` rule (spec A.8, issue 18): ``v1`` shifts every scale, including a grid that fits in
one window (as the released HRSAM checkpoints were trained); ``v2`` shifts only grids larger than
one window. The official presets use v1, ours v2."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hrsam.attention import Attention
from hrsam.attention.windows import window_plan
from hrsam.models import get_preset
from hrsam.models.presets import PRESETS, build_image_encoder


def test_v1_pads_a_single_window_grid_half_a_window_top_left():
    """A 16 x 16 grid with Ws = 16 (256 px): v1 pads 8 top/left like any other grid, so its
    256 tokens fall into 4 windows of 8 x 8; v2 leaves it one window."""
    v1 = window_plan([(16, 16)], 16, True, shift_rule="v1")
    v2 = window_plan([(16, 16)], 16, True, shift_rule="v2")
    assert v2.num_windows == 1 and v2.q_counts == (256,)
    assert v1.num_windows == 4 and v1.q_counts == (64, 64, 64, 64)
    assert v1.token_positions[0].tolist() == [8.0, 8.0]  # (0, 0) sits at padded (8, 8)
    assert v1.token_positions[-1].tolist() == [23.0, 23.0]
    # below one window too: a 10 x 10 grid spans rows/cols 8..17 of a 32 x 32 padded grid
    small = window_plan([(10, 10)], 16, True, shift_rule="v1")
    assert small.num_windows == 4 and small.q_counts == (64, 16, 16, 4)
    assert window_plan([(10, 10)], 16, True, shift_rule="v2").num_windows == 1
    # plain blocks are the same under both rules
    assert window_plan([(16, 16)], 16, False, shift_rule="v1").num_windows == 1


@pytest.mark.parametrize("g", [32, 37, 64])
def test_rules_agree_on_grids_larger_than_a_window(g):
    v1 = window_plan([(g, g)], 16, True, shift_rule="v1")
    v2 = window_plan([(g, g)], 16, True, shift_rule="v2")
    assert torch.equal(v1.slots, v2.slots) and v1.q_counts == v2.q_counts


def test_official_presets_use_v1_and_ours_v2():
    assert get_preset("hrsam_vit_b").shift == "v1"
    assert get_preset("hrsampp_vit_b").shift == "v1"
    for name in ("hrsam_tiny", "hrsampp_tiny"):
        assert PRESETS[name].shift == "v2"
    with pytest.raises(ValueError, match=r"shift='v3' must be one of v1, v2"):
        get_preset("hrsam_vit_b", shift="v3")


def _small_official(**kw):
    """hrsam_vit_b's layout and v1 rule at a CPU-friendly width and depth (Ws = 16)."""
    p = dataclasses.replace(
        get_preset("hrsam_vit_b", **kw),
        embed_dim=64,
        num_heads=2,
        depth=2,
        ssm_indexes=(1,),
        out_indexes=(1,),
        state_dim=4,
        out_dim=32,
    )
    torch.manual_seed(0)
    enc = build_image_encoder(p).eval()
    with torch.no_grad():  # a pad token that is not zero, as in trained weights
        for blk in enc.blocks:
            blk.attn.padding.normal_()
    return enc


@pytest.mark.parametrize(("px", "differ"), [(256, True), (512, False)])
def test_official_preset_shifts_a_16x16_grid_and_agrees_at_32x32(px, differ):
    """HRSAM with the official preset at 256 px (a 16 x 16 grid, one window) shifts its odd
    blocks under v1, so its output differs from v2's; at 512 px (32 x 32) both rules agree."""
    v1, v2 = _small_official(), _small_official(shift="v2")
    v2.load_state_dict(v1.state_dict())
    assert v1.blocks[1].attn.pattern.shift_rule == "v1"
    x = torch.randn(1, 3, px, px, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = v1(x), v2(x)
    assert (not torch.allclose(a, b, atol=1e-6)) == differ


@pytest.mark.parametrize("pattern", ["shifted_pad", "swin"])
def test_v1_single_window_grid_in_every_padded_pattern(pattern):
    """shifted_pad equals shifted_kv under v1 on a single-window grid (both pad 8 top/left);
    swin rolls it (v1) or not (v2)."""
    torch.manual_seed(0)
    grids = [(16, 16)]
    ref = Attention(32, 2, attention="shifted_kv", window_size=16, shifted=True, shift_rule="v1")
    other = Attention(32, 2, attention=pattern, window_size=16, shifted=True, shift_rule="v1")
    v2 = Attention(32, 2, attention=pattern, window_size=16, shifted=True, shift_rule="v2")
    other.load_state_dict(ref.state_dict())
    v2.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for m in (ref, other, v2):
            m.padding.normal_(generator=torch.Generator().manual_seed(2))
        x = torch.randn(1, 256, 32)
        out_ref, out, out_v2 = ref(x, grids), other(x, grids), v2(x, grids)
    if pattern == "shifted_pad":
        torch.testing.assert_close(out, out_ref)
    assert not torch.allclose(out, out_v2, atol=1e-6)  # the rule changes what is computed
