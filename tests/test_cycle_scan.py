"""The cycle-scan module: repeats in one scan with gamma mixing, per-scale scans, size."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hrsam.ssm import selective_scan
from hrsam.ssm.cycle_scan import CycleScan


def _module(dim=12, n=4, r=3, scan="ref", seed=0):
    torch.manual_seed(seed)
    m = CycleScan(dim, state_dim=n, cycle_repeats=r, scan=scan)
    with torch.no_grad():
        m.gamma.normal_()  # a non-trivial mix
        m.Ds.normal_()
    return m


def _explicit(m: CycleScan, x: torch.Tensor) -> torch.Tensor:
    """The module written out: scan the explicitly repeated sequence with `ref`, mix with gamma."""
    c, n, r = m.dim, m.state_dim, m.cycle_repeats
    xs, z = F.silu(m.in_proj[0](m.in_norm(x))).chunk(2, -1)
    p = m.ssm_proj(xs)
    rep = torch.cat([xs] * r, 1)  # (B, R * L, C)
    prep = torch.cat([p] * r, 1)
    y = selective_scan(
        rep.transpose(1, 2),
        prep[..., :c].transpose(1, 2),
        -torch.exp(m.As_log),
        prep[..., c : c + n].transpose(1, 2),
        prep[..., c + n :].transpose(1, 2),
        m.Ds,
        m.ssm_proj_bias,
        delta_softplus=True,
        backend="ref",
    )
    length = x.shape[1]
    mixed = sum(m.gamma[:, k] * y[:, :, k * length : (k + 1) * length] for k in range(r))
    return x + m.out_proj(z * m.out_norm(mixed.transpose(1, 2)))


@pytest.mark.parametrize("r", [1, 2, 3])
def test_repeats_equal_explicitly_repeated_scan(r):
    m = _module(r=r)
    x = torch.randn(2, 23, 12)
    with torch.no_grad():
        assert (m(x) - _explicit(m, x)).abs().max().item() <= 1e-5


def test_one_repeat_is_a_plain_scan():
    m = _module(r=1)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(1, 30, 12)
    c, n = m.dim, m.state_dim
    with torch.no_grad():
        xs, z = m.in_proj(m.in_norm(x)).chunk(2, -1)
        dt, bm, cm = m.ssm_proj(xs).split([c, n, n], -1)
        y = selective_scan(
            xs.mT,
            dt.mT,
            -m.As_log.exp(),
            bm.mT,
            cm.mT,
            m.Ds,
            m.ssm_proj_bias,
            delta_softplus=True,
            backend="ref",
        )
        expected = x + m.out_proj(z * m.out_norm(y.mT))
        assert (m(x) - expected).abs().max().item() <= 1e-5


def test_per_scale_scan_equals_separate_scans():
    m = _module()
    x = torch.randn(2, 16 + 9 + 4, 12)
    with torch.no_grad():
        joint = m(x)
        split = m(x, lengths=[16, 9, 4])
        separate = torch.cat([m(x[:, :16]), m(x[:, 16:25]), m(x[:, 25:])], 1)
    assert (split - separate).abs().max().item() <= 1e-6
    assert (joint - split).abs().max().item() > 1e-3  # the joint scan does mix scales


def test_cpu_backend_in_module_matches_ref_with_gradients():
    ref, fast = _module(scan="ref"), _module(scan="cpu")
    x = torch.randn(2, 40, 12)
    xr, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_r, out_f = ref(xr), fast(xf)
    assert (out_r - out_f).abs().max().item() <= 1e-5
    out_r.sum().backward()
    out_f.sum().backward()
    assert (xr.grad - xf.grad).abs().max().item() <= 1e-5
    for (name, pr), (_, pf) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        assert (pr.grad - pf.grad).abs().max().item() <= 1e-5 * max(
            1.0, pr.grad.abs().max().item()
        ), name


def test_parameter_count_and_names_match_spec():
    m = CycleScan(768, state_dim=32, cycle_repeats=3)
    assert sum(p.numel() for p in m.parameters()) == 2_443_072  # spec E.2
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["in_proj.0.weight"] == (1536, 768)
    assert shapes["ssm_proj.weight"] == (832, 768)
    assert shapes["As_log"] == (768, 32) and shapes["gamma"] == (768, 3, 1)


def test_init_follows_spec():
    m = CycleScan(64, state_dim=8)
    assert torch.allclose(m.As_log[5], torch.log(torch.arange(1, 9.0)))
    dt = F.softplus(m.ssm_proj_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert m.ssm_proj.bias.abs().max() == 0
    assert m.ssm_proj.weight[:64].abs().max() <= 64**-0.5
    assert (m.Ds == 1).all() and (m.gamma == 1).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="cycle_repeats=0 must be >= 1"):
        CycleScan(8, cycle_repeats=0)
    with pytest.raises(ValueError, match="unknown scan 'cuda'"):
        CycleScan(8, scan="cuda")
    with pytest.raises(ValueError, match=r"lengths \[3, 3\] sum to 6, not the 7 tokens"):
        CycleScan(8, state_dim=2)(torch.randn(1, 7, 8), lengths=[3, 3])


@pytest.mark.parametrize(
    "dim,n,r", [(12, 8, 3), (40, 8, 2), (20, 16, 1)]
)  # 40: two 16-channel tiles and a partial one; N = 16: one partial 32-channel tile
@pytest.mark.parametrize("lengths", [None, [16, 9, 4]])
def test_fused_cpu_cycle_scan_matches_the_explicit_scan(monkeypatch, dim, n, r, lengths):
    """With the cpu scan the whole mix (bias, softplus, R repeats, gamma) runs as one kernel on
    token-major rows, and with gradients its backward is one kernel too. Outputs and every
    gradient equal the explicitly repeated `ref` scan of a float64 copy of the module; a chunk
    boundary falls inside the sequence (R * 29 > 64 steps)."""
    from hrsam.ssm import cycle_scan

    calls = []
    fused = cycle_scan.fused_cycle_scan
    monkeypatch.setattr(cycle_scan, "fused_cycle_scan", lambda *a: calls.append(1) or fused(*a))
    m = _module(dim=dim, n=n, r=r, scan="cpu")
    with torch.no_grad():
        m.ssm_proj.bias.normal_(0, 3.0)  # step sizes both sides of softplus's threshold 20
        m.ssm_proj.bias[:3] = 25.0
    ref = copy.deepcopy(m).double()
    ref.scan = "ref"
    x = torch.randn(2, 29, dim)
    parts = x.split(lengths, 1) if lengths else [x]
    with torch.no_grad():
        got = m(x, lengths=lengths)
        expected = torch.cat([_explicit(ref, p.double()) for p in parts], 1)
    assert calls, "the fused kernel did not run"
    assert (got - expected).abs().max().item() <= 2e-5

    calls.clear()
    xf, xr = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    w = torch.randn(x.shape)
    (m(xf, lengths=lengths) * w).sum().backward()
    (torch.cat([_explicit(ref, p) for p in xr.split(lengths or [29], 1)], 1) * w).sum().backward()
    assert calls, "the fused kernel did not run with gradients"
    grads = [("x", xf.grad, xr.grad)] + [
        (name, pf.grad, pr.grad)
        for (name, pf), (_, pr) in zip(m.named_parameters(), ref.named_parameters(), strict=True)
    ]
    for name, gf, gr in grads:
        assert (gf - gr).abs().max().item() <= 2e-5 * max(1.0, gr.abs().max().item()), name


def test_fused_backward_is_run_to_run_identical_and_can_be_switched_off(monkeypatch):
    """The fused backward's sums over channels are per thread with a fixed assignment, so two
    backward passes give bit-identical gradients; `unfused_cycle_scan` restores the repeated
    generic scan (the comparison path of benchmarks.train_step), which agrees to 1e-5."""
    from hrsam.ssm import cycle_scan

    m = _module(dim=40, n=8, scan="cpu")
    x = torch.randn(2, 70, 40)

    def grads():
        m.zero_grad(set_to_none=True)
        m(x).square().sum().backward()
        return [p.grad.clone() for p in m.parameters()]

    first, second = grads(), grads()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    calls = []
    fused = cycle_scan.fused_cycle_scan
    monkeypatch.setattr(cycle_scan, "fused_cycle_scan", lambda *a: calls.append(1) or fused(*a))
    with cycle_scan.unfused_cycle_scan():
        unfused = grads()
    assert not calls
    for a, b in zip(first, unfused, strict=True):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())
