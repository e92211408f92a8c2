"""Window plans reproduce the counts of spec A.6 and index every token exactly once."""

from __future__ import annotations

import pytest
import torch

from hrsam.attention.windows import window_plan

# (grid, plain windows, shifted windows, shifted slots): spec A.6 table, Ws = 16
SPEC_A6 = [
    (64, 16, 25, 6_400),
    (128, 64, 81, 20_736),
    (192, 144, 169, 43_264),
    (256, 256, 289, 73_984),
    (32, 4, 9, 2_304),
]


@pytest.mark.parametrize(("g", "plain", "shifted", "slots"), SPEC_A6)
def test_counts_match_spec(g, plain, shifted, slots):
    p = window_plan([(g, g)], 16, shifted=False)
    s = window_plan([(g, g)], 16, shifted=True)
    assert p.num_windows == plain and p.num_slots == g * g
    assert s.num_windows == shifted and s.num_slots == slots
    assert s.q_lengths.min().item() == 64  # 8x8 corner windows on 16-divisible grids


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("grids", [[(37, 53)], [(37, 53), (32, 32), (5, 3)], [(1, 1)]], ids=str)
def test_plan_indexes_every_token_once(grids, shifted):
    plan = window_plan(grids, 16, shifted)
    length = sum(h * w for h, w in grids)
    real = plan.slots[plan.slots < length]
    assert torch.equal(real.sort().values, torch.arange(length))
    assert (plan.slots == length).sum().item() == plan.num_slots - length
    assert torch.equal(plan.slots[plan.token_slot], torch.arange(length))
    assert torch.equal(plan.q_tokens[plan.inverse], torch.arange(length))
    assert plan.q_lengths.min().item() >= 1 and plan.q_lengths.sum().item() == length
    # groups are contiguous window ranges with one query count each, in decreasing order
    assert plan.groups[0][0] == 0 and plan.groups[-1][1] == plan.num_windows
    for (w0, w1, n), nxt in zip(plan.groups, [*plan.groups[1:], None], strict=True):
        assert (plan.q_lengths[w0:w1] == n).all()
        assert nxt is None or (nxt[0] == w1 and nxt[2] < n)


def test_shifted_padding_is_half_window_top_left():
    plan = window_plan([(20, 20)], 16, True)
    # the top-left window: 8 pad rows then 8 real rows, each with 8 pad columns then 8 real
    win = (plan.slots.view(-1, 256) == 0).any(1).nonzero().item()
    first = plan.slots.view(-1, 256)[win].view(16, 16)
    assert (first[:8] == 400).all() and (first[:, :8] == 400).all()
    assert first[8, 8].item() == 0 and first[15, 15].item() == 7 * 20 + 7
    # real-token positions are offset by 8 in padded coordinates
    assert plan.token_positions[0].tolist() == [8.0, 8.0]
    # a grid that fits in one window is not shifted
    small = window_plan([(20, 20), (16, 16)], 16, True)
    assert small.windows_per_scale == (4, 1)


def test_plain_windows_pad_bottom_right():
    plan = window_plan([(37, 53)], 16, False)
    assert plan.num_windows == 3 * 4
    assert plan.q_lengths.max().item() == 256 and plan.q_lengths.min().item() == 5 * 5
    # windows are sorted by query count: full windows first, the 5x5 corner last
    assert plan.slots.view(-1, 256)[0, 0].item() == 0


def test_bad_window_inputs():
    with pytest.raises(ValueError, match="window_size=0 must be an integer >= 1"):
        window_plan([(8, 8)], 0, False)
    with pytest.raises(ValueError, match=r"token grid 0x8 must have H >= 1"):
        window_plan([(0, 8)], 4, False)
