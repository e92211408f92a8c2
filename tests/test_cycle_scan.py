"""The cycle-scan module: repeats in one scan with gamma mixing, per-scale scans, size."""

from __future__ import annotations

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


@pytest.mark.parametrize("dim", [12, 40])  # 40: two channel tiles of 16 and a partial one
@pytest.mark.parametrize("lengths", [None, [16, 9, 4]])
def test_fused_cpu_inference_matches_the_explicit_scan(monkeypatch, dim, lengths):
    """Under no_grad the cpu scan runs the whole mix (bias, softplus, R repeats, gamma) as one
    kernel on token-major rows; it equals the explicitly repeated `ref` scan."""
    from hrsam.ssm import cycle_scan

    calls = []
    fused = cycle_scan.cycle_scan_inference
    monkeypatch.setattr(cycle_scan, "cycle_scan_inference", lambda *a: calls.append(1) or fused(*a))
    m = _module(dim=dim, n=8, scan="cpu")
    with torch.no_grad():
        m.ssm_proj.bias.normal_(0, 3.0)  # step sizes both sides of softplus's threshold 20
        m.ssm_proj.bias[:3] = 25.0
        x = torch.randn(2, 29, dim)
        got = m(x, lengths=lengths)
        parts = x.split(lengths, 1) if lengths else [x]
        expected = torch.cat([_explicit(m, p) for p in parts], 1)
    assert calls, "the fused kernel did not run"
    assert (got - expected).abs().max().item() <= 2e-5
    with torch.enable_grad():  # with gradients the module takes the autograd path
        calls.clear()
        m(x.requires_grad_(True))
        assert not calls
