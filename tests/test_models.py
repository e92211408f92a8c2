"""Models: our SAM against the official segment-anything modules, HRSAM/HRSAM++ sizes and
official checkpoint keys, kernels inside the backbone, extrapolation, predictor geometry,
checkpoint safety."""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hrsam.attention import list_attention, list_kernels, variant_support
from hrsam.models import (
    CheckpointError,
    Predictor,
    build_model,
    get_preset,
    load_checkpoint,
    load_official_hrsam,
    load_sam_checkpoint,
    remap_official_hrsam,
    save_checkpoint,
)
from hrsam.models.mask_decoder import MaskDecoder
from hrsam.models.prompt_encoder import PromptEncoder
from hrsam.models.sam_encoder import SamImageEncoder
from hrsam.models.segmenter import InteractiveSegmenter
from hrsam.models.transformer import TwoWayTransformer
from hrsam.registry import UnknownNameError
from tests.standins import GroundTruthStandIn

KEYS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official-checkpoint-keys"


def official():
    """segment_anything.modeling without running the package __init__ (it needs torchvision)."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None:
        pytest.skip("segment-anything is not installed (pip install -e .[test])")
    if "segment_anything" not in sys.modules:
        pkg = types.ModuleType("segment_anything")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["segment_anything"] = pkg
    import segment_anything.modeling as modeling

    return modeling


def _randomize(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (SAM zero-inits rel-pos and pos tables)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.05
            is_norm_scale = p.dim() == 1 and name.endswith("weight")
            p.copy_(noise + 1.0 if is_norm_scale else noise)


def _max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def _official_encoder(m, img_size=256):
    return m.ImageEncoderViT(
        img_size=img_size,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        out_chans=256,
        qkv_bias=True,
        norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
    )


def _official_heads(m, grid=16):
    pe = m.PromptEncoder(
        embed_dim=256,
        image_embedding_size=(grid, grid),
        input_image_size=(grid * 16, grid * 16),
        mask_in_chans=16,
    )
    md = m.MaskDecoder(
        num_multimask_outputs=3,
        transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return pe, md


@pytest.mark.parametrize(("kernel", "chunk"), [("math", None), ("sdpa", None), ("sdpa", 1)])
def test_sam_image_encoder_matches_official(kernel, chunk, monkeypatch):
    """``chunk=1``: the fused kernel builds the relative-position bias one head at a time."""
    from hrsam.models import sam_encoder

    if chunk is not None:
        monkeypatch.setattr(sam_encoder, "BIAS_CHUNK_BYTES", chunk)
    m = official()
    torch.manual_seed(0)
    ref = _official_encoder(m).eval()
    _randomize(ref)
    ours = SamImageEncoder(img_size=256, kernel=kernel).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert _max_diff(ours(x), ref(x)) <= 1e-5


def test_prompt_encoder_and_mask_decoder_match_official():
    m = official()
    torch.manual_seed(1)
    ref_pe, ref_md = _official_heads(m, grid=64)
    _randomize(ref_pe, 1)
    _randomize(ref_md, 2)
    pe, md = PromptEncoder(256, (64, 64), (1024, 1024), 16), MaskDecoder(256)
    pe.load_state_dict(ref_pe.state_dict(), strict=True)
    md.load_state_dict(ref_md.state_dict(), strict=True)
    coords = torch.tensor([[[100.0, 200.0], [700.0, 33.0], [1000.0, 1000.0]]])
    labels = torch.tensor([[1, 0, 1]])
    prev = torch.randn(1, 1, 256, 256)
    emb = torch.randn(1, 256, 64, 64)
    with torch.no_grad():
        for masks in (None, prev):
            s_ref, d_ref = ref_pe((coords, labels), None, masks)
            s, d = pe((coords, labels), None, masks)
            assert _max_diff(s, s_ref) <= 1e-5 and _max_diff(d, d_ref) <= 1e-5
            assert _max_diff(pe.get_dense_pe(), ref_pe.get_dense_pe()) <= 1e-6
            for multi in (False, True):
                out_ref = ref_md(emb, ref_pe.get_dense_pe(), s_ref, d_ref, multi)
                out = md(emb, pe.get_dense_pe(), s, d, multi)
                assert out[0].shape == out_ref[0].shape
                assert _max_diff(out[0], out_ref[0]) <= 1e-5
                assert _max_diff(out[1], out_ref[1]) <= 1e-5


def test_full_sam_forward_matches_official_through_our_loader(tmp_path):
    m = official()
    torch.manual_seed(2)
    pe, md = _official_heads(m, grid=16)
    sam = m.Sam(image_encoder=_official_encoder(m), prompt_encoder=pe, mask_decoder=md).eval()
    _randomize(sam, 3)
    ckpt = tmp_path / "sam_vit_b_256.pth"
    torch.save(sam.state_dict(), ckpt)
    ours = InteractiveSegmenter(
        SamImageEncoder(img_size=256),
        PromptEncoder(256, (16, 16), (256, 256)),
        MaskDecoder(256, TwoWayTransformer()),
        image_format="RGB",
    ).eval()
    load_sam_checkpoint(ours, ckpt)
    img = torch.rand(3, 200, 256) * 255
    coords = torch.tensor([[[30.0, 40.0], [120.0, 150.0]]])
    labels = torch.tensor([[1, 0]])
    with torch.no_grad():
        out = sam(
            [
                {
                    "image": img,
                    "original_size": (200, 256),
                    "point_coords": coords,
                    "point_labels": labels,
                }
            ],
            multimask_output=False,
        )[0]
        x = ours.normalize(img[None])
        x = torch.nn.functional.pad(x, (0, 0, 0, 56))
        low, iou = ours.decode(ours.encode(x), coords, labels)
    assert _max_diff(low, out["low_res_logits"]) <= 1e-5
    assert _max_diff(iou, out["iou_predictions"]) <= 1e-5


@pytest.mark.parametrize(
    ("name", "official_name"),
    [("sam_vit_b", "vit_b"), ("sam_vit_l", "vit_l"), ("sam_vit_h", "vit_h")],
)
def test_sam_encoder_sizes_equal_official(name, official_name):
    m = official()
    from segment_anything.build_sam import sam_model_registry

    with torch.device("meta"):
        ref = sam_model_registry[official_name](checkpoint=None)
        ours = build_model(name)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(ours.image_encoder) == count(ref.image_encoder)
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert m is not None


@pytest.mark.parametrize(
    ("name", "backbone"), [("hrsam_vit_b", 96_369_152), ("hrsampp_vit_b", 106_934_016)]
)
def test_parameter_counts(name, backbone):
    with torch.device("meta"):
        model = build_model(name)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(model.image_encoder) == backbone
    assert count(model.prompt_encoder) == 6_220
    assert count(model.mask_decoder) == 4_058_340


def _official_state(tsv: Path) -> dict:
    state = {}
    for line in tsv.read_text().splitlines():
        key, shape, _ = line.split("\t")
        dims = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        state[key] = torch.zeros(dims)
    return state


@pytest.mark.parametrize(
    ("name", "tsv"), [("hrsam_vit_b", "hrsam.tsv"), ("hrsampp_vit_b", "hrsam_plusplus.tsv")]
)
def test_official_hrsam_keys_load_strictly(name, tsv, tmp_path):
    if not (KEYS / tsv).exists():
        pytest.skip(f"{KEYS / tsv} not found (../shared beside the checkout)")
    state = _official_state(KEYS / tsv)
    model = build_model(name)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": state, "meta": {"iter": 40000}}, path)
    load_official_hrsam(model, path)
    assert model.image_encoder.blocks[3].attn.padding.abs().sum() == 0  # loaded, not kept
    renamed = dict(state)
    renamed["backbone.blocks.0.attn.pad_token"] = renamed.pop("backbone.blocks.0.attn.padding")
    torch.save({"state_dict": renamed}, path)
    with pytest.raises(
        CheckpointError, match=r"missing keys: image_encoder\.blocks\.0\.attn\.padding"
    ):
        load_official_hrsam(model, path)
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: image_encoder\.blocks\.0\.attn\.pad_token"
    ):
        load_official_hrsam(model, path)
    assert set(remap_official_hrsam(state)) == set(model.state_dict())


@pytest.mark.parametrize("pattern", list_attention())
def test_every_pattern_and_kernel_runs_in_the_backbone(pattern):
    torch.manual_seed(0)
    base = build_model("hrsam_tiny", attention=pattern, kernel="math").eval()
    x = torch.randn(1, 3, 176, 176)  # an 11x11 grid: no window divides it
    with torch.no_grad():
        ref = base.image_encoder(x)
        assert ref.shape == (1, 64, 11, 11)
        for kernel in list_kernels():
            if variant_support(pattern, kernel, "cpu", torch.float32):
                continue
            base.image_encoder.set_kernel(kernel)
            assert _max_diff(base.image_encoder(x), ref) <= 1e-4, kernel


def test_hrsampp_tiny_and_scan_off():
    torch.manual_seed(0)
    pp = build_model("hrsampp_tiny").eval()
    no_scan = build_model("hrsam_tiny", scan="none").eval()
    assert (
        not hasattr(no_scan.image_encoder, "mamba_blocks")
        or len(no_scan.image_encoder.mamba_blocks) == 0
    )
    with torch.no_grad():
        assert pp.image_encoder(torch.randn(1, 3, 320, 320)).shape == (1, 64, 20, 20)
        assert no_scan.image_encoder(torch.randn(1, 3, 128, 128)).shape == (1, 64, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize("ts", [1024, 1040])
def test_hrsam_vit_b_extrapolates_to_any_multiple_of_16(ts):
    model = build_model("hrsam_vit_b").eval()
    with torch.no_grad():
        emb = model.encode(torch.randn(1, 3, ts, ts))
    assert emb.shape == (1, 256, ts // 16, ts // 16) and torch.isfinite(emb).all()


def test_ts_not_multiple_of_16_fails_clearly():
    model = build_model("hrsam_tiny")
    with pytest.raises(ValueError, match=r"input 100x100 must be a multiple of the patch size 16"):
        model.encode(torch.randn(1, 3, 100, 100))
    with pytest.raises(ValueError, match="ts=1000 must be a positive multiple of 16"):
        Predictor(model, ts=1000)


@pytest.mark.parametrize("size", [(333, 517), (517, 333), (64, 64), (1000, 37)])
@pytest.mark.parametrize("ts", [512, 1024])
def test_predictor_round_trip_geometry(size, ts):
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    gt = ((yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 2) ** 2 / (w / 3) ** 2) < 1
    image = np.repeat(gt[..., None] * 255, 3, -1).astype(np.uint8)
    pred = Predictor(GroundTruthStandIn(), ts=ts)
    pred.set_image(image)
    logits, low = pred.predict(np.array([[h // 2, w // 2]]), np.array([1]))
    assert logits.shape == (1, h, w) and low.shape == (1, 1, ts // 4, ts // 4)
    mask = logits[0].numpy() > 0
    iou = (mask & gt).sum() / (mask | gt).sum()
    # the stand-in is exact at ts/4; what is lost is resampling a 37-px-wide object at ts/4
    assert iou >= (0.99 if min(h, w) >= 64 else 0.85)


def test_checkpoint_round_trip_and_kernel_override(tmp_path):
    torch.manual_seed(0)
    model = build_model("hrsam_tiny", window_size=4).eval()
    path = save_checkpoint(model, tmp_path / "ckpts" / "tiny.pt", step=3)
    assert not list(path.parent.glob("*.tmp"))
    loaded = load_checkpoint(path, kernel="math").eval()
    assert loaded.preset.window_size == 4 and loaded.preset.kernel == "math"
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert _max_diff(loaded.encode(x), model.encode(x)) <= 1e-5
    with pytest.raises(CheckpointError, match="override 'window_size' would change"):
        load_checkpoint(path, window_size=8)
    assert load_checkpoint(path, window_size=4).preset.window_size == 4  # its own value: fine
    # the kernel is compute, not weights: the file says `auto`, the loader picks for its device
    from hrsam.models.checkpoint import read_state

    assert read_state(path)["config"]["kernel"] == "auto"
    assert load_checkpoint(path, device="cpu", dtype=torch.bfloat16).preset.kernel == "sdpa"


def test_bad_checkpoint_files_are_named_and_never_executed(tmp_path):
    model = build_model("hrsam_tiny")
    good = save_checkpoint(model, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=r"truncated\.pt is corrupt or not a PyTorch checkpoint"
    ):
        load_checkpoint(truncated)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.txt is corrupt or not a PyTorch checkpoint"):
        load_sam_checkpoint(model, text)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Evil()}}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pth holds a pickled Python object") as e:
        load_official_hrsam(model, evil)
    assert "weights_only" not in str(e.value)  # torch's advice to load it unsafely is not ours
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_preset_errors_list_valid_choices():
    with pytest.raises(
        UnknownNameError, match=r"unknown preset 'hrsam_vit_x'; valid: .*hrsam_tiny"
    ):
        build_model("hrsam_vit_x")
    with pytest.raises(
        ValueError, match=r"unknown override 'windowsize'; valid: attention, kernel"
    ):
        build_model("hrsam_tiny", windowsize=8)
    with pytest.raises(ValueError, match=r"window_size=0 must be >= 1"):
        build_model("hrsam_tiny", window_size=0)
    with pytest.raises(UnknownNameError, match="unknown kernel 'cuda'"):
        get_preset("hrsam_vit_b", kernel="cuda")
    with pytest.raises(ValueError, match=r"override scan='ref' does not apply to SAM"):
        build_model("sam_vit_b", scan="ref")
    with pytest.raises(ValueError, match="anchor size 500 must be a positive multiple of 16"):
        build_model("hrsam_tiny", anchor_sizes=(500,))


@pytest.mark.parametrize(
    "preset, attention, kernel, ts",
    [
        ("hrsam_tiny", "shifted_kv", "sdpa", 272),  # 17x17 grid: partial windows and pad slots
        ("hrsam_tiny", "shifted_kv", "math", 256),
        ("hrsampp_tiny", "shifted_kv", "sdpa", 240),  # two scales, each with its own windows
        ("hrsam_tiny", "swin", "sdpa", 272),  # not window-local here: token-wise half sliced
        ("hrsam_tiny", "shifted_pad", "math", 272),
    ],
)
@pytest.mark.parametrize("chunk", [37, 2048])
def test_chunked_inference_matches_the_whole_block(
    monkeypatch, preset, attention, kernel, ts, chunk
):
    """Under no_grad a block runs a few windows (or, for other patterns, its MLP half a slice)
    at a time; the encoder output equals the whole-sequence forward (the training path), the
    input is left untouched, and the windowed path really ran for KV-only windows."""
    from hrsam.models import hrsam as hrsam_module

    torch.manual_seed(0)
    model = build_model(preset, attention=attention, kernel=kernel).eval()
    with torch.no_grad():  # distinct norms, a non-zero pad token: nothing equal by init
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.05)
    x = torch.randn(1, 3, ts, ts)
    whole = model.encode(x).detach()  # grad enabled: the unchunked path
    calls = []
    windows = hrsam_module.Block.forward_windows

    def spy(self, tokens, plan):
        calls.append(plan.num_windows)
        before = tokens.clone()
        out = windows(self, tokens, plan)
        assert torch.equal(tokens, before), "forward_windows changed its input"
        return out

    monkeypatch.setattr(hrsam_module, "CHUNK_TOKENS", chunk)  # 37: one window at a time
    monkeypatch.setattr(hrsam_module.Block, "forward_windows", spy)
    with torch.no_grad():
        chunked = model.encode(x)
    assert _max_diff(chunked, whole) <= 2e-5
    assert chunked.abs().max() > 0
    assert bool(calls) == (attention == "shifted_kv")


@pytest.mark.parametrize("chunk", [None, 1])
def test_sam_encoder_fused_path_gradients_match_math(chunk, monkeypatch):
    """The fused path (pad-free windowed blocks, bias built per block of queries) against the
    official computation (``math``), gradients included: a 10x10 grid with windows of 4 pads
    every window row and column."""
    from hrsam.models import sam_encoder

    if chunk is not None:
        monkeypatch.setattr(sam_encoder, "BIAS_CHUNK_BYTES", chunk)
    kw = dict(img_size=160, embed_dim=64, depth=2, num_heads=2, window_size=4)
    ref = SamImageEncoder(**kw, global_attn_indexes=(1,), kernel="math")
    _randomize(ref, 5)
    fused = SamImageEncoder(**kw, global_attn_indexes=(1,), kernel="sdpa")
    fused.load_state_dict(ref.state_dict())
    assert fused.blocks[0].pad_free and not ref.blocks[0].pad_free
    x = torch.randn(1, 3, 160, 160)
    grads = []
    for model in (ref, fused):
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        grads[-1]["out"] = out.detach()
    for name, g in grads[0].items():
        assert _max_diff(grads[1][name], g) <= 1e-5 * max(1.0, g.abs().max().item()), name


# -- kernel auto (issue #29): every preset runs the fastest exact kernel its device has ---------


def test_auto_resolves_to_one_kernel_per_device_and_dtype_for_every_family():
    """Every preset asks for ``auto``; on this CPU every family gets the same fused kernel (not
    the ``math`` reference) in fp32 and bf16, and the choice is the kernel's own probe."""
    from hrsam.attention.kernels import AUTO, resolve_kernel
    from hrsam.models import PRESETS

    for dtype in (torch.float32, torch.bfloat16):
        chosen = {}
        for name, preset in PRESETS.items():
            assert preset.kernel == AUTO, name
            chosen[name] = preset.for_device("cpu", dtype).kernel
        assert set(chosen.values()) == {"sdpa"}, (dtype, chosen)
        assert resolve_kernel(AUTO, "cpu", dtype, needs_bias=True) == "sdpa"
    # a kernel asked for by name is kept; the default build names what it chose
    assert get_preset("sam_tiny", kernel="math").for_device("cpu").kernel == "math"
    assert build_model("sam_tiny").preset.kernel == "sdpa"
    assert build_model("sam_tiny").image_encoder.blocks[0].attn.kernel.name == "sdpa"


def test_auto_takes_only_kernels_whose_probe_runs_and_that_apply_the_bias(monkeypatch):
    """The rule, with the probe answers replaced: the first kernel of the device's order whose
    probe passes; a bias (SAM's relative positions, Swin's mask) rules out flash-attn; nothing
    that runs leaves the reference."""
    from hrsam.attention import kernels

    runs = {"flash", "xformers", "sdpa"}
    monkeypatch.setattr(
        kernels.Kernel,
        "support",
        lambda self, device, dtype, backward=False: [] if self.name in runs else ["no"],
    )
    auto = functools.partial(kernels.resolve_kernel, "auto", "cuda", torch.bfloat16)
    assert auto() == "flash"
    assert auto(needs_bias=True) == "xformers"
    runs.discard("xformers")
    assert auto(needs_bias=True) == "sdpa"
    runs.clear()
    assert auto() == "math"
    runs.add("flash")  # SAM's family always adds a bias: flash never runs it
    assert get_preset("hrsam_tiny").for_device("cuda", torch.bfloat16).kernel == "flash"
    assert get_preset("sam_tiny").for_device("cuda", torch.bfloat16).kernel == "math"
    with pytest.raises(UnknownNameError, match=r"unknown kernel 'fast'; valid: .*sdpa.*auto"):
        kernels.resolve_kernel("fast", "cpu")


@pytest.mark.gpu
def test_auto_on_this_gpu_is_a_fused_kernel_that_matches_math():
    from hrsam.attention.kernels import resolve_kernel

    kernel = resolve_kernel("auto", "cuda", torch.bfloat16)
    assert kernel != "math"
    torch.manual_seed(0)
    x = torch.randn(1, 3, 256, 256, device="cuda")
    ref = build_model("hrsam_tiny", kernel="math").cuda().eval()
    fast = build_model("hrsam_tiny", device="cuda", dtype=torch.bfloat16).cuda().eval()
    fast.load_state_dict(ref.state_dict())
    assert fast.preset.kernel == kernel
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        assert (ref.encode(x).float() - fast.encode(x).float()).abs().max() < 5e-2
