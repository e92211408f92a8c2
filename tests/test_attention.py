"""Attention variants: every (pattern, kernel) against the math kernel and dense references.

Parametrized over the registries, so registering a new pattern or kernel tests it."""

from __future__ import annotations

import os

import pytest
import torch

from hrsam.attention import (
    ATTENTION,
    Attention,
    get_attention,
    get_kernel,
    list_attention,
    list_kernels,
    register_attention,
    variant_support,
)
from hrsam.attention.rope import Rope2d
from hrsam.attention.swin import swin_mask
from hrsam.attention.windows import window_plan
from hrsam.registry import UnknownNameError
from tests.reference import dense_reference, rope_explicit

DIM, HEADS, WS = 64, 4, 8
CASES = {
    "divisible": [(16, 16)],
    "odd": [(13, 21)],
    "multiscale": [(13, 21), (8, 8), (5, 3)],
}
REFERENCE_MODE = {
    "global": "global",
    "window": "padded",
    "shifted_pad": "padded",
    "shifted_kv": "padded",
    "swin": "swin",
}


def _device_for(kernel: str) -> str:
    return (
        "cuda"
        if torch.cuda.is_available() and get_kernel(kernel).support("cpu", torch.float32)
        else "cpu"
    )


def _pairs():
    for pattern in list_attention():
        for kernel in list_kernels():
            cpu_ok = not get_kernel(kernel).support("cpu", torch.float32)
            marks = () if cpu_ok else (pytest.mark.gpu,)
            yield pytest.param(pattern, kernel, id=f"{pattern}-{kernel}", marks=marks)


def _module(pattern, kernel="math", shifted=True, window_size=WS, rope=True, seed=0):
    torch.manual_seed(seed)
    m = Attention(
        DIM,
        HEADS,
        attention=pattern,
        kernel=kernel,
        window_size=window_size,
        shifted=shifted,
        rope=rope,
    )
    with torch.no_grad():
        m.padding.normal_()  # a non-trivial pad token, so pad slots matter
    return m


def _inputs(grids, batch=2, seed=1, device="cpu", dtype=torch.float32):
    torch.manual_seed(seed)
    length = sum(h * w for h, w in grids)
    return torch.randn(batch, length, DIM, device=device, dtype=dtype)


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def _skip_unless_supported(pattern, kernel, device, dtype, backward):
    reasons = variant_support(pattern, kernel, device, dtype, backward)
    if reasons:
        pytest.skip("; ".join(reasons))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
@pytest.mark.parametrize(("pattern", "kernel"), list(_pairs()))
def test_kernel_matches_math_fp32(pattern, kernel, shifted, case):
    device = _device_for(kernel)
    grids = CASES[case]
    backward = kernel != "flex" or device != "cpu"
    _skip_unless_supported(pattern, kernel, device, torch.float32, backward=False)
    ref = _module(pattern, "math", shifted).to(device)
    fast = _module(pattern, kernel, shifted).to(device)
    x = _inputs(grids, device=device)
    x_ref = x.clone().requires_grad_(backward)
    x_fast = x.clone().requires_grad_(backward)
    with torch.set_grad_enabled(backward):
        out_ref, out_fast = ref(x_ref, grids), fast(x_fast, grids)
    assert out_fast.shape == x.shape
    assert (out_fast - out_ref).abs().max().item() <= 1e-5
    if not backward:
        return  # FlexAttention has no CPU backward; its reason is tested in test_support_reasons
    g = torch.randn_like(out_ref)
    (out_ref * g).sum().backward()
    (out_fast * g).sum().backward()
    assert _rel_err(x_fast.grad, x_ref.grad) <= 1e-5
    for (name, p_ref), (_, p_fast) in zip(
        ref.named_parameters(), fast.named_parameters(), strict=True
    ):
        assert _rel_err(p_fast.grad, p_ref.grad) <= 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("pattern", "kernel"), list(_pairs()))
def test_kernel_reduced_precision(pattern, kernel, dtype):
    """Error against fp32 math is at most 2x that of the same-dtype math reference."""
    device = _device_for(kernel)
    _skip_unless_supported(pattern, kernel, device, dtype, backward=False)
    _skip_unless_supported(pattern, "math", device, dtype, backward=False)
    grids = CASES["odd"]
    truth = _module(pattern, "math").to(device)
    x = _inputs(grids, device=device)
    with torch.no_grad():
        expected = truth(x, grids)
        ref_lp = _module(pattern, "math").to(device, dtype)(x.to(dtype), grids).float()
        fast_lp = _module(pattern, kernel).to(device, dtype)(x.to(dtype), grids).float()
    ref_err = (ref_lp - expected).abs().max().item()
    fast_err = (fast_lp - expected).abs().max().item()
    assert ref_err > 0
    assert fast_err <= 2 * ref_err, (fast_err, ref_err)


@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("pattern", list(REFERENCE_MODE))
def test_pattern_matches_dense_reference(pattern, case, shifted):
    grids = CASES[case]
    m = _module(pattern, "math", shifted)
    x = _inputs(grids)
    with torch.no_grad():
        out = m(x, grids)
        ref = dense_reference(m, x, grids, REFERENCE_MODE[pattern])
    assert (out - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("grids", [[(16, 16)], [(13, 13)], [(7, 7), (7, 7)]], ids=str)
def test_window_covering_grid_equals_global(grids):
    """One window exactly covering each (square) grid: no pad slot, so window == global."""
    ws = grids[0][0]
    win = _module("window", window_size=ws)
    glob = _module("global", window_size=ws)
    glob.load_state_dict(win.state_dict())
    x = _inputs(grids)
    with torch.no_grad():
        assert (win(x, grids) - glob(x, grids)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
@pytest.mark.parametrize(
    "grids",
    [[(16, 16)], [(37, 53)], [(37, 53), (16, 16)], [(24, 40), (8, 8), (3, 11)]],
    ids=str,
)
def test_shifted_kv_equals_shifted_pad(grids, shifted):
    pad = _module("shifted_pad", shifted=shifted)
    kv = _module("shifted_kv", shifted=shifted)
    kv.load_state_dict(pad.state_dict())
    x = _inputs(grids, batch=3)
    with torch.no_grad():
        assert (kv(x, grids) - pad(x, grids)).abs().max().item() <= 1e-5


def test_swin_mask_is_the_shifted_window_partition():
    """Swin's roll + mask lets two cells attend iff they fall in the same window of the grid
    shifted by Ws/2 (the characterization the dense reference uses)."""
    ws, shift, ph, pw = 8, 4, 24, 32
    mask = swin_mask(ph, pw, ws, shift, "cpu")[:, 0]  # (nW, S, S)
    r, c = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
    r, c = r.flatten(), c.flatten()
    # cell (r, c) lands at rolled ((r - s) mod ph, (c - s) mod pw)
    rr, rc = (r - shift) % ph, (c - shift) % pw
    win = (rr // ws) * (pw // ws) + rc // ws
    slot = (rr % ws) * ws + rc % ws
    same_win = win[:, None] == win[None, :]
    allowed_swin = same_win & (mask[win[:, None], slot[:, None], slot[None, :]] == 0)
    group = ((r + shift) // ws) * 100 + (c + shift) // ws
    assert torch.equal(allowed_swin, group[:, None] == group[None, :])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_rope_matches_explicit_formula_and_is_relative(dtype):
    rope = Rope2d(16)
    torch.manual_seed(0)
    x = torch.randn(5, 3, 16, dtype=torch.float64)
    pos = torch.tensor([[0, 0], [0, 1], [3, 7], [10, 2], [5, 5]])
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    got = rope(x.to(dtype), pos.float()).double()
    assert (got - rope_explicit(x, pos)).abs().max().item() <= tol
    # Hand check of the sign convention on one pair: x = (1, 0) at angle t -> (cos t, -sin t).
    e = torch.zeros(1, 1, 16, dtype=dtype)
    e[..., 0] = 1.0
    out = rope(e, torch.tensor([[2.0, 0.0]]))
    t = torch.tensor(0.5 * 2.0)  # pos 2 * 0.5, first frequency 1
    assert torch.allclose(
        out[0, 0, :2].double(), torch.stack([t.cos(), -t.sin()]).double(), atol=tol
    )
    # q.k after rotation depends only on the position difference
    q, k = torch.randn(1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 16, dtype=torch.float64)

    def dot(pq, pk):
        qr = rope(q, torch.tensor([pq], dtype=torch.float32))
        return (qr * rope(k, torch.tensor([pk], dtype=torch.float32))).sum()

    if dtype == torch.float64:
        assert torch.allclose(dot([3, 4], [1, 9]), dot([10, 6], [8, 11]))


def test_registry_lists_and_rejects_unknown_names():
    assert {"global", "window", "shifted_pad", "shifted_kv", "swin"} <= set(list_attention())
    assert {"math", "sdpa", "flex", "xformers", "flash"} <= set(list_kernels())
    assert list_attention("shifted_*") == ["shifted_kv", "shifted_pad"]
    with pytest.raises(UnknownNameError, match=r"unknown attention 'windw'; valid: global, "):
        get_attention("windw")
    with pytest.raises(UnknownNameError, match=r"unknown kernel 'cuda_fast'; valid: .*sdpa"):
        get_kernel("cuda_fast")
    with pytest.raises(ValueError, match="already registered"):
        register_attention("swin")(object)
    assert len(ATTENTION.names()) == len(set(ATTENTION.names()))


def test_support_reasons():
    cpu = variant_support("shifted_kv", "xformers", "cpu", torch.float32)
    assert any("CUDA only" in r for r in cpu)
    flash = variant_support("shifted_kv", "flash", "cpu", torch.float32)
    assert any("float16 or bfloat16" in r for r in flash)
    assert any(
        "additive mask" in r for r in variant_support("swin", "flash", "cpu", torch.bfloat16)
    )
    assert any(
        "no backward on CPU" in r
        for r in variant_support("window", "flex", "cpu", torch.float32, backward=True)
    )
    assert variant_support("shifted_kv", "sdpa", "cpu", torch.float32) == []
    assert variant_support("swin", "math", "cpu", torch.bfloat16) == []


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"window_size=0 must be an integer >= 1"):
        Attention(DIM, HEADS, window_size=0)
    with pytest.raises(ValueError, match=r"dim=64 must be divisible by num_heads=5"):
        Attention(DIM, 5)
    m = Attention(DIM, HEADS, window_size=WS)
    x = torch.randn(1, 100, DIM)
    with pytest.raises(ValueError, match=r"token count 100 does not match the grids 9x11 = 99"):
        m(x, [(9, 11)])
    with pytest.raises(UnknownNameError, match="unknown attention 'windw'"):
        Attention(DIM, HEADS, attention="windw")


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["shifted_kv", "swin"])
def test_compiled_flex_matches_math(pattern, monkeypatch):
    monkeypatch.setenv("HRSAM_FLEX_COMPILE", "1")
    grids = CASES["multiscale"]
    ref, fast = _module(pattern, "math"), _module(pattern, "flex")
    x = _inputs(grids)
    with torch.no_grad():
        assert (fast(x, grids) - ref(x, grids)).abs().max().item() <= 1e-5
    assert os.environ["HRSAM_FLEX_COMPILE"] == "1"


@pytest.mark.parametrize("permutation", [False, True])
def test_gather_rows_backward_equals_indexing(permutation):
    from hrsam.attention.gather import gather_rows

    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, 5)
    if permutation:
        index = torch.randperm(7)
        inverse = torch.empty_like(index)
        inverse[index] = torch.arange(7)
    else:  # repeats (as pad slots repeat the pad row) and a row never gathered
        index, inverse = torch.tensor([6, 0, 6, 3, 6, 1, 1, 2, 4]), None
    g = torch.randn(2, len(index), 2, 5)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = gather_rows(a[:, :, 1:], index, inverse)  # a strided view, as qkv[:, :, 1:]
    assert torch.equal(out, b[:, index, 1:])
    (out * g).sum().backward()
    (b[:, index, 1:] * g).sum().backward()
    assert (a.grad - b.grad).abs().max().item() <= 1e-6
    assert a.grad[:, :, 0].abs().max() == 0


@pytest.mark.parametrize("used", ["qkv", "k"])
def test_split_qkv_backward_equals_indexing(used):
    """The gather backward that writes each real row once and sums the pad row equals autograd's
    indexing backward, also when only some outputs get a gradient (the others' rows are 0)."""
    from hrsam.attention.gather import split_qkv

    plan = window_plan(((5, 7), (3, 3)), 4, True, "cpu")  # two scales, many pad slots
    n = plan.num_tokens
    assert int((plan.slots == n).sum()) > 1
    torch.manual_seed(0)
    x = torch.randn(2, n + 1, 3, 3, 4)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert torch.equal(plan.pad_slots, (plan.slots == n).nonzero().squeeze(1))
    fast = split_qkv(a, plan)
    plain = (b[:, :n, 0], b[:, plan.slots, 1], b[:, plan.slots, 2])
    for f, p in zip(fast, plain, strict=True):
        assert torch.equal(f, p)
    picks = range(3) if used == "qkv" else [1]
    for outs in (fast, plain):
        sum(
            (outs[i] * torch.randn(outs[i].shape, generator=torch.Generator().manual_seed(i))).sum()
            for i in picks
        ).backward()
    assert torch.equal(a.grad[:, :n], b.grad[:, :n])  # real rows: pure gathers, exact
    # the pad row: a sum over its slots, in another order than index_put's accumulation
    torch.testing.assert_close(a.grad[:, n], b.grad[:, n], rtol=1e-5, atol=1e-5)
    if used == "k":
        assert a.grad[:, :, 0].abs().max() == 0 and a.grad[:, :, 2].abs().max() == 0


@pytest.mark.parametrize("kernel", ["math", "sdpa"])
@pytest.mark.parametrize("case", list(CASES))
def test_shifted_kv_gradients_match_dense_reference(kernel, case):
    """Gradients through the scatter-add gathers against the dense reference (plain autograd
    over explicit masks) and against the generic index backward."""
    from hrsam.attention.gather import generic_index_backward

    grids = CASES[case]
    m = _module("shifted_kv", kernel, shifted=True)
    x = _inputs(grids)
    g = torch.randn_like(x)
    grads = []
    for run in ("fast", "generic", "dense"):
        m.zero_grad()
        xi = x.clone().requires_grad_()
        with generic_index_backward() if run == "generic" else torch.enable_grad():
            out = dense_reference(m, xi, grids, "padded") if run == "dense" else m(xi, grids)
        (out * g).sum().backward()
        grads.append({"x": xi.grad, **{n: p.grad.clone() for n, p in m.named_parameters()}})
    fast, generic, dense = grads
    for name in dense:
        assert _rel_err(fast[name], dense[name]) <= 1e-5, name
        assert _rel_err(fast[name], generic[name]) <= 1e-5, name
