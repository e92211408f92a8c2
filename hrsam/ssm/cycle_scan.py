"""The cycle-scan SSM module of HRSAM (spec A.9) and its HRSAM++ variants (spec A.11).

A standalone residual module placed before blocks 2, 5, 8, 11. It scans the whole token sequence
in raster order, repeated ``cycle_repeats`` times in ONE scan (the state carries across repeats,
so early tokens in later cycles have seen the whole image), and mixes the outputs of all cycles
with a learnable per-channel ``gamma``::

    x, z = SiLU(in_proj(LN_in(x))).split(2)
    dt, B, C = ssm_proj(x)                     # full-rank dt (C); B, C (N) shared by channels
    y = selective_scan(repeat(x, R), repeat(dt, R), -exp(As_log), repeat(B), repeat(C), Ds,
                       ssm_proj_bias, softplus)          # (R, L) steps, h_0 = 0
    y = sum_r gamma[:, r] * y_r
    out = shortcut + out_proj(z * LN_out(y))

Parameter names match the official checkpoints (``in_proj.0``, ``ssm_proj``, ``As_log``, ...).
With ``lengths`` (HRSAM++ per-scale ``ss`` scans) each part of the sequence is scanned on its
own, with its own zero state; without it the concatenated sequence is one scan (the joint ``ms``
scan).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from hrsam.ssm.cpu_scan import fused_cycle_scan
from hrsam.ssm.scan import default_scan, get_scan, selective_scan

_UNFUSED = False


@contextlib.contextmanager
def unfused_cycle_scan() -> Iterator[None]:
    """Within the block, `CycleScan` with the ``cpu`` scan repeats u, dt, B and C R times and
    runs the generic selective scan on them (the path before the fused kernel), for same-run
    comparisons (``python -m benchmarks.train_step``)."""
    global _UNFUSED
    before, _UNFUSED = _UNFUSED, True
    try:
        yield
    finally:
        _UNFUSED = before


class CycleScan(nn.Module):
    """Cycle-scan SSM.

    Args:
        dim: token channels C.
        state_dim: SSM state size N.
        cycle_repeats: R, how many times the sequence is traversed in one scan.
        scan: scan backend name, or ``"auto"``.
        dt_min, dt_max, dt_floor: initial step-size range (log-uniform) and floor.
    """

    def __init__(
        self,
        dim: int,
        state_dim: int = 32,
        cycle_repeats: int = 3,
        scan: str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        if state_dim < 1:
            raise ValueError(f"state_dim={state_dim} must be >= 1")
        if cycle_repeats < 1:
            raise ValueError(f"cycle_repeats={cycle_repeats} must be >= 1")
        if scan != "auto":
            get_scan(scan)  # an unknown backend fails here, listing the valid ones
        self.dim, self.state_dim, self.cycle_repeats, self.scan = (
            dim,
            state_dim,
            cycle_repeats,
            scan,
        )
        self.in_norm = nn.LayerNorm(dim)
        self.in_proj = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU())
        self.ssm_proj = nn.Linear(dim, dim + 2 * state_dim)
        self.ssm_proj_bias = nn.Parameter(torch.empty(dim))
        self.As_log = nn.Parameter(torch.empty(dim, state_dim))
        self.Ds = nn.Parameter(torch.empty(dim))
        self.gamma = nn.Parameter(torch.empty(dim, cycle_repeats, 1))
        self.out_norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim)
        self._dt_range = (dt_min, dt_max, dt_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Spec A.9 init: dt rows U(+-C^-0.5), zero proj bias, dt bias = softplus^-1(dt) with dt
        log-uniform, S4D-real A (log 1..N), D = 1, gamma = 1."""
        dt_min, dt_max, dt_floor = self._dt_range
        bound = self.dim**-0.5
        self.ssm_proj.weight[: self.dim].uniform_(-bound, bound)
        self.ssm_proj.bias.zero_()
        dt = torch.exp(
            torch.rand(self.dim) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp_min(dt_floor)
        self.ssm_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        n = torch.arange(1, self.state_dim + 1, dtype=torch.float32)
        self.As_log.copy_(torch.log(n).expand(self.dim, -1))
        self.Ds.fill_(1.0)
        self.gamma.fill_(1.0)

    def mix(self, x: Tensor) -> Tensor:
        """The SSM path on (B, L, C) gated tokens ``x`` and one zero initial state: (B, L, C)."""
        proj = self.ssm_proj(x)
        if self._fused(x):
            A = -torch.exp(self.As_log.float())
            return fused_cycle_scan(x, proj, A, self.Ds, self.ssm_proj_bias, self.gamma)
        return self.repeated_scan(x, proj)

    def repeated_scan(self, x: Tensor, proj: Tensor) -> Tensor:
        """`mix` written out, for any scan backend: u, dt, B and C repeated R times along the
        sequence, one selective scan over the R-fold sequence, the cycles mixed with gamma."""
        b, length, c = x.shape
        r, n = self.cycle_repeats, self.state_dim
        dt, bm, cm = proj.split([c, n, n], -1)
        u = x.transpose(1, 2).repeat(1, 1, r)  # (B, C, R * L): the sequence R times
        delta = dt.transpose(1, 2).repeat(1, 1, r)
        bm = bm.transpose(1, 2).repeat(1, 1, r)  # (B, N, R * L)
        cm = cm.transpose(1, 2).repeat(1, 1, r)
        y = selective_scan(
            u,
            delta,
            -torch.exp(self.As_log.float()),
            bm,
            cm,
            self.Ds,
            self.ssm_proj_bias,
            delta_softplus=True,
            backend=self.scan,
        )
        y = (y.view(b, c, r, length) * self.gamma).sum(2)  # per-channel mix of all cycles
        return y.transpose(1, 2)

    def _fused(self, x: Tensor) -> bool:
        """Whether `mix` runs as one CPU kernel call (and one for its backward): float32 on CPU
        with the ``cpu`` scan (chosen or picked by ``auto``), unless `unfused_cycle_scan` is
        active."""
        if _UNFUSED or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        return (default_scan(x.device) if self.scan == "auto" else self.scan) == "cpu"

    def forward(self, x: Tensor, lengths: Sequence[int] | None = None) -> Tensor:
        """(B, L, C) raster-order tokens -> (B, L, C), residual included.

        Args:
            x: tokens; scales concatenated for HRSAM++.
            lengths: token count of each part to scan separately (per-scale scan); None scans
                the whole sequence as one (joint scan).
        """
        if lengths is not None and sum(lengths) != x.shape[1]:
            raise ValueError(
                f"lengths {list(lengths)} sum to {sum(lengths)}, not the {x.shape[1]} tokens of x"
            )
        shortcut = x
        xs, z = self.in_proj(self.in_norm(x)).chunk(2, -1)
        if lengths is None or len(lengths) == 1:
            y = self.mix(xs)
        else:
            y = torch.cat([self.mix(part) for part in xs.split(list(lengths), 1)], 1)
        return shortcut + self.out_proj(z * self.out_norm(y))

    def extra_repr(self) -> str:
        return f"state_dim={self.state_dim}, cycle_repeats={self.cycle_repeats}, scan={self.scan}"
