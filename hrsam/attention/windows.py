"""Window index plans for plain and shifted windows with padding (HRSAM spec A.6, A.8).

A token sequence is one or more raster-ordered grids concatenated (HRSAM++ scales). Each grid is
padded to whole windows: plain windows pad bottom/right; shifted windows first pad ``Ws // 2``
rows and columns top/left, then round bottom/right up to a multiple of ``Ws``. Windows never mix
scales. Pad slots point at index ``num_tokens``: the row that holds the learnable pad token.

Which scales a shifted block shifts is the ``shift`` rule (spec A.8, issue 18):

* ``v2`` (our presets): only grids larger than one window (``H > Ws or W > Ws``); a grid that fits
  in one window has nothing to shift.
* ``v1`` (the released HRSAM checkpoints, trained with the v1 code): every scale, including a
  grid that fits in one window, which is padded ``Ws // 2`` top/left like any other grid.

Positions are in padded-grid coordinates and restart at 0 for each scale (spec A.4).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Grid = tuple[int, int]
SHIFT_RULES = ("v1", "v2")


def check_grids(grids: Sequence[Sequence[int]], num_tokens: int | None = None) -> tuple[Grid, ...]:
    """Validates token grids and, if given, that they hold exactly ``num_tokens`` tokens."""
    out = tuple((int(h), int(w)) for h, w in grids)
    if not out:
        raise ValueError("grids must name at least one (H, W) token grid")
    for h, w in out:
        if h < 1 or w < 1:
            raise ValueError(f"token grid {h}x{w} must have H >= 1 and W >= 1")
    total = sum(h * w for h, w in out)
    if num_tokens is not None and total != num_tokens:
        shown = " + ".join(f"{h}x{w}" for h, w in out)
        raise ValueError(
            f"token count {num_tokens} does not match the grids {shown} = {total} tokens"
        )
    return out


def check_window_size(window_size: int) -> int:
    if not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size={window_size!r} must be an integer >= 1")
    return window_size


def check_shift_rule(rule: str) -> str:
    if rule not in SHIFT_RULES:
        raise ValueError(f"shift={rule!r} must be one of {', '.join(SHIFT_RULES)}")
    return rule


def shift_applies(grid: Grid, window_size: int, rule: str = "v2") -> bool:
    """Whether a shifted block shifts this grid: ``v2`` only grids larger than one window,
    ``v1`` every grid."""
    h, w = grid
    return check_shift_rule(rule) == "v1" or h > window_size or w > window_size


def padded_shape(
    grid: Grid, window_size: int, shifted: bool, rule: str = "v2"
) -> tuple[int, int, int]:
    """(top/left pad, padded H, padded W) of one grid."""
    h, w = grid
    pad = window_size // 2 if shifted and shift_applies(grid, window_size, rule) else 0
    ph = math.ceil((pad + h) / window_size) * window_size
    pw = math.ceil((pad + w) / window_size) * window_size
    return pad, ph, pw


@dataclass(frozen=True, eq=False)
class WindowPlan:
    """Index plan of one window partition of a (multi-scale) token sequence, per batch item.

    ``S = window_size ** 2`` slots per window; ``n = num_windows * S`` slots in all.

    Attributes:
        grids, window_size, shifted, shift_rule: what the plan was built for.
        num_tokens: real tokens ``L`` (sum of H * W over scales).
        num_windows: windows over all scales.
        windows_per_scale: window count of each scale.
        slots: (n,) index into ``[tokens; pad]`` of every slot, window-major; pad slots = L.
        slot_positions: (n, 2) padded-grid (row, col) of every slot.
        token_positions: (L, 2) padded-grid (row, col) of every real token, raster order.
        token_slot: (L,) slot of every real token (gathers slot outputs back to raster order).
        pad_slots: (n - L,) the slots that hold the pad token, ascending.
        q_tokens: (L,) real tokens in window order (the packed queries of KV-only padding).
        q_positions: (L, 2) padded-grid (row, col) of the packed queries (``q_tokens`` order).
        q_lengths: (num_windows,) real tokens per window (never 0).
        q_counts: ``q_lengths`` as host-side ints (varlen kernels build their masks from them
            without reading the device).
        inverse: (L,) position of each raster token in ``q_tokens``.
        groups: ``(first window, end window, queries per window)`` ranges. Windows are ordered
            by decreasing query count (stable), so windows with equal counts are contiguous and
            a dense kernel runs each range as one batch on views, without gathers.
    """

    grids: tuple[Grid, ...]
    window_size: int
    shifted: bool
    num_tokens: int
    num_windows: int
    windows_per_scale: tuple[int, ...]
    slots: Tensor
    slot_positions: Tensor
    token_positions: Tensor
    token_slot: Tensor
    pad_slots: Tensor
    q_tokens: Tensor
    q_positions: Tensor
    q_lengths: Tensor
    inverse: Tensor
    groups: tuple[tuple[int, int, int], ...]
    q_counts: tuple[int, ...] = ()
    shift_rule: str = "v2"

    @property
    def num_slots(self) -> int:
        return self.num_windows * self.window_size**2


def _to_window_major(t: Tensor, ws: int) -> Tensor:
    """(PH, PW, ...) -> (PH * PW, ...) with windows in raster order, raster order inside."""
    ph, pw = t.shape[:2]
    rest = t.shape[2:]
    t = t.reshape(ph // ws, ws, pw // ws, ws, *rest).transpose(1, 2)
    return t.reshape(ph * pw, *rest)


@functools.lru_cache(maxsize=128)
def _window_plan(
    grids: tuple[Grid, ...], ws: int, shifted: bool, device: str, rule: str = "v2"
) -> WindowPlan:
    num_tokens = sum(h * w for h, w in grids)
    slots, positions, per_scale = [], [], []
    offset = 0
    for grid in grids:
        h, w = grid
        pad, ph, pw = padded_shape(grid, ws, shifted, rule)
        index = torch.full((ph, pw), num_tokens, dtype=torch.long)
        index[pad : pad + h, pad : pad + w] = torch.arange(h * w).view(h, w) + offset
        rows, cols = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
        pos = torch.stack([rows, cols], -1).float()
        slots.append(_to_window_major(index, ws))
        positions.append(_to_window_major(pos, ws))
        per_scale.append((ph // ws) * (pw // ws))
        offset += h * w
    slots_t = torch.cat(slots)
    slot_pos = torch.cat(positions)
    n_win = sum(per_scale)
    s2 = ws * ws
    # Order windows by decreasing real-token count (stable): equal counts become contiguous.
    counts = (slots_t.view(n_win, s2) < num_tokens).sum(1)
    order = torch.sort(-counts, stable=True).indices
    slots_t = slots_t.view(n_win, s2)[order].reshape(-1)
    slot_pos = slot_pos.view(n_win, s2, 2)[order].reshape(-1, 2)
    real = slots_t < num_tokens
    real_slots = real.nonzero().squeeze(1)
    q_tokens = slots_t[real_slots]
    token_slot = torch.empty(num_tokens, dtype=torch.long)
    token_slot[q_tokens] = real_slots
    inverse = torch.empty(num_tokens, dtype=torch.long)
    inverse[q_tokens] = torch.arange(num_tokens)
    q_lengths = real.view(n_win, s2).sum(1)
    groups, start = [], 0
    for length in sorted(set(q_lengths.tolist()), reverse=True):
        n = int((q_lengths == length).sum())
        groups.append((start, start + n, int(length)))
        start += n
    return WindowPlan(
        grids=grids,
        window_size=ws,
        shifted=shifted,
        num_tokens=num_tokens,
        num_windows=n_win,
        windows_per_scale=tuple(per_scale),
        slots=slots_t.to(device),
        slot_positions=slot_pos.to(device),
        token_positions=slot_pos[token_slot].to(device),
        token_slot=token_slot.to(device),
        pad_slots=(~real).nonzero().squeeze(1).to(device),
        q_tokens=q_tokens.to(device),
        q_positions=slot_pos[real_slots].to(device),
        q_lengths=q_lengths.to(device),
        inverse=inverse.to(device),
        groups=tuple(groups),
        q_counts=tuple(int(n) for n in q_lengths.tolist()),
        shift_rule=rule,
    )


def window_plan(
    grids: Sequence[Sequence[int]],
    window_size: int,
    shifted: bool,
    device: torch.device | str = "cpu",
    shift_rule: str = "v2",
) -> WindowPlan:
    """The (cached) window plan of ``grids`` for plain (``shifted=False``) or shifted windows,
    shifting the grids that ``shift_rule`` (``v1`` / ``v2``) shifts."""
    return _window_plan(
        check_grids(grids),
        check_window_size(window_size),
        bool(shifted),
        str(torch.device(device)),
        check_shift_rule(shift_rule),
    )


def grid_positions(grids: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> Tensor:
    """(L, 2) unpadded (row, col) of every token, restarting at 0 per scale (cached)."""
    return _grid_positions(check_grids(grids), str(torch.device(device)))


@functools.lru_cache(maxsize=64)
def _grid_positions(grids: tuple[Grid, ...], device: str) -> Tensor:
    out = []
    for h, w in grids:
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        out.append(torch.stack([rows, cols], -1).reshape(-1, 2))
    return torch.cat(out).float().to(device)
