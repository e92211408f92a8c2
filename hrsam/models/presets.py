"""Model presets (frozen dataclasses, all numbers in one place) and ``build_model``.

SAM ViT-B/L/H, HRSAM ViT-B, HRSAM++ ViT-B (spec A.2, E.1) and CPU-sized tiny presets that keep
every mechanism (plain + shifted windows, pad tokens, RoPE, cycle-scan, the neck, an anchor scale
for HRSAM++). Every ablation axis is an override of ``build_model``::

    build_model("hrsam_vit_b", attention="swin", kernel="math")     # traditional Swin
    build_model("hrsam_vit_b", scan="none")                          # HRSAM without cycle-scan
    build_model("hrsam_vit_b", anchor_sizes=(512,))                  # = HRSAM++ layout
    build_model("sam_vit_b", attention="window")                     # SAM with window attention

Every preset's kernel is ``auto``: `build_model` resolves it for the device and dtype the model
will run in (``device="cpu"``, fp32 unless told) to the fastest exact kernel a tiny probe call
finds working there (`hrsam.attention.kernels.resolve_kernel`), the same rule for every family;
``model.preset.kernel`` names the kernel that was chosen. ``kernel="math"`` asks for the reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from hrsam.attention import get_attention, list_attention
from hrsam.attention.kernels import AUTO, check_kernel_name, resolve_kernel
from hrsam.attention.windows import check_shift_rule
from hrsam.models.detail import add_context, add_detail, add_refine
from hrsam.models.hrsam import HRSAMPlusPlusViT, HRSAMViT
from hrsam.models.mask_decoder import MaskDecoder
from hrsam.models.prompt_encoder import PromptEncoder
from hrsam.models.sam_encoder import SamImageEncoder
from hrsam.models.segmenter import InteractiveSegmenter
from hrsam.models.transformer import TwoWayTransformer
from hrsam.registry import UnknownNameError
from hrsam.ssm.scan import get_scan

FAMILIES = ("sam", "hrsam")
SAM_ATTENTION = ("global", "window")


@dataclass(frozen=True)
class ModelPreset:
    """Everything that defines a model. ``family`` is "sam" or "hrsam" (HRSAM++ = hrsam with
    ``anchor_sizes``)."""

    name: str
    family: str
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    img_size: int = 224  # HRSAM: sizes the 14x14 abs-pos grid; SAM: the 1024 training input
    window_size: int = 16
    attention: str = "shifted_kv"
    kernel: str = AUTO  # resolved where the model runs: `for_device`
    global_attn_indexes: tuple[int, ...] = ()
    ssm_indexes: tuple[int, ...] = (2, 5, 8, 11)
    out_indexes: tuple[int, ...] = (2, 5, 8, 11)
    scan: str = "auto"
    state_dim: int = 32
    cycle_repeats: int = 3
    anchor_sizes: tuple[int, ...] = ()
    out_dim: int = 256
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    image_format: str = "BGR"
    train_ts: int = 1024
    # which grids shifted blocks shift (hrsam.attention.windows): the official checkpoints were
    # trained with the v1 code (every grid, even one that fits one window); ours use v2
    shift: str = "v2"
    # channels of the mask decoder's detail path at T/4 (hrsam.models.detail); 0: SAM's decoder
    detail: int = 0
    # hidden channels of the detail path's T/2 refine (hrsam.models.detail.add_refine); 0: masks
    # at T/4. Needs ``detail``.
    refine: int = 0
    # context blocks on the detail path's T/4 features (hrsam.models.detail.add_context): a
    # receptive field of 7 input pixels, 103 with two. Needs ``detail``.
    context: int = 0

    def _check_sizes(self, bad) -> None:
        least = {"window_size": 1, "cycle_repeats": 1, "detail": 0, "refine": 0, "context": 0}
        for key, n in least.items():
            if getattr(self, key) < n:
                raise bad(f"{key}={getattr(self, key)} must be >= {n}")
        for key in ("refine", "context"):
            if getattr(self, key) and not self.detail:
                raise bad(f"{key}={getattr(self, key)} needs the detail path (detail > 0)")

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"preset {self.name!r}: {msg}")

        if self.family not in FAMILIES:
            raise bad(f"family={self.family!r} must be one of {', '.join(FAMILIES)}")
        self._check_sizes(bad)
        if self.family == "sam":
            if self.attention not in SAM_ATTENTION:
                raise bad(
                    f"attention={self.attention!r} for a SAM preset must be one of "
                    f"{', '.join(SAM_ATTENTION)} (its global blocks)"
                )
        else:
            get_attention(self.attention)
        check_kernel_name(self.kernel)
        try:
            check_shift_rule(self.shift)
        except ValueError as e:
            raise bad(str(e)) from None
        if self.scan not in ("auto", "none"):
            get_scan(self.scan)
        for s in self.anchor_sizes:
            if s < 16 or s % 16:
                raise bad(f"anchor size {s} must be a positive multiple of 16")
        if self.anchor_sizes and self.family != "hrsam":
            raise bad("anchor_sizes apply to HRSAM presets only")
        if self.embed_dim % self.num_heads:
            raise bad(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        for i in (*self.ssm_indexes, *self.out_indexes, *self.global_attn_indexes):
            if not 0 <= i < self.depth:
                raise bad(f"block index {i} is outside depth {self.depth}")

    @property
    def attention_bias(self) -> bool:
        """Whether the kernel must add a bias: SAM's relative positions, Swin's mask."""
        return self.family == "sam" or get_attention(self.attention).needs_bias

    def for_device(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        backward: bool = False,
    ) -> ModelPreset:
        """This preset with its kernel resolved for ``device`` and ``dtype`` (``auto``: the
        fastest exact kernel probed to run there, with a backward pass when ``backward``)."""
        kernel = resolve_kernel(
            self.kernel, device, dtype, needs_bias=self.attention_bias, backward=backward
        )
        return self if kernel == self.kernel else dataclasses.replace(self, kernel=kernel)


def _sam(name: str, dim: int, depth: int, heads: int, globals_: tuple[int, ...]) -> ModelPreset:
    return ModelPreset(
        name,
        "sam",
        dim,
        depth,
        heads,
        img_size=1024,
        window_size=14,
        attention="global",
        global_attn_indexes=globals_,
        ssm_indexes=(),
        out_indexes=(),
        image_format="RGB",
    )


# CPU-sized: 4 blocks (plain, shifted, plain, shifted), 2 cycle-scans, 2 neck levels.
_TINY = ModelPreset(
    "hrsam_tiny",
    "hrsam",
    embed_dim=96,
    depth=4,
    num_heads=4,
    window_size=8,
    ssm_indexes=(1, 3),
    out_indexes=(1, 3),
    state_dim=8,
    out_dim=64,
    decoder_heads=4,
    decoder_mlp_dim=256,
    image_format="RGB",
    train_ts=512,
    # the decoder's detail path (hrsam.models.detail): the pretraining recipe's third stage adds it
    # (ablations/conf/pretrain.yaml); without it the T/4 mask could not follow the scenes'
    # outlines (benchmarks/results/cpu/pretrain.md, session 17)
    detail=16,
)

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        _sam("sam_vit_b", 768, 12, 12, (2, 5, 8, 11)),
        _sam("sam_vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        _sam("sam_vit_h", 1280, 32, 16, (7, 15, 23, 31)),
        ModelPreset("hrsam_vit_b", "hrsam", shift="v1"),
        ModelPreset("hrsampp_vit_b", "hrsam", anchor_sizes=(512,), shift="v1"),
        _TINY,
        dataclasses.replace(_TINY, name="hrsampp_tiny", anchor_sizes=(256,)),
        # SAM's layout at the tiny size (global attention in blocks 1 and 3): the baseline row of
        # CPU sweeps
        dataclasses.replace(
            _sam("sam_tiny", 96, 4, 4, (1, 3)),
            img_size=512,
            window_size=8,
            out_dim=64,
            decoder_heads=4,
            decoder_mlp_dim=256,
            train_ts=512,
            detail=16,
        ),
    ]
}

OVERRIDES = (
    "attention",
    "kernel",
    "window_size",
    "scan",
    "cycle_repeats",
    "anchor_sizes",
    "shift",
    "detail",
    "refine",
    "context",
)


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, **overrides) -> ModelPreset:
    """The preset ``name`` with ``overrides`` applied and validated."""
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override {unknown[0]!r}; valid: {', '.join(OVERRIDES)}")
    base = PRESETS[name]
    if base.family == "sam":
        for key in ("scan", "cycle_repeats", "anchor_sizes", "shift"):
            if overrides.get(key) not in (None, (), []):
                raise ValueError(
                    f"override {key}={overrides[key]!r} does not apply to SAM "
                    f"preset {name!r}; SAM presets take attention, kernel, window_size"
                )
    if "anchor_sizes" in overrides:
        overrides["anchor_sizes"] = tuple(int(s) for s in overrides["anchor_sizes"])
    return dataclasses.replace(base, **overrides)


def build_image_encoder(p: ModelPreset):
    """The preset's image encoder (a kernel ``auto`` resolved for the CPU in fp32)."""
    p = p.for_device()
    if p.family == "sam":
        return SamImageEncoder(
            img_size=p.img_size,
            embed_dim=p.embed_dim,
            depth=p.depth,
            num_heads=p.num_heads,
            out_chans=p.out_dim,
            window_size=p.window_size,
            global_attn_indexes=p.global_attn_indexes if p.attention == "global" else (),
            kernel=p.kernel,
        )
    kwargs = dict(
        img_size=p.img_size,
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads,
        window_size=p.window_size,
        attention=p.attention,
        kernel=p.kernel,
        ssm_indexes=() if p.scan == "none" else p.ssm_indexes,
        out_indexes=p.out_indexes,
        state_dim=p.state_dim,
        cycle_repeats=p.cycle_repeats,
        scan="auto" if p.scan == "none" else p.scan,
        out_dim=p.out_dim,
        shift_rule=p.shift,
    )
    if p.anchor_sizes:
        return HRSAMPlusPlusViT(anchor_sizes=p.anchor_sizes, **kwargs)
    return HRSAMViT(**kwargs)


def build_model(
    preset: str | ModelPreset,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    training: bool = False,
    **overrides,
) -> InteractiveSegmenter:
    """Builds the interactive segmenter of a preset (name or `ModelPreset`) with overrides
    (``attention``, ``kernel``, ``window_size``, ``scan``, ``cycle_repeats``, ``anchor_sizes``,
    ``shift``, ``detail``, ``refine``, ``context``), on the CPU. ``device``, ``dtype`` and
    ``training`` say where and how it will run: a kernel ``auto`` is resolved for them
    (`ModelPreset.for_device`)."""
    p = preset if isinstance(preset, ModelPreset) else get_preset(preset, **overrides)
    p = p.for_device(device, dtype, backward=training)
    grid = p.train_ts // 16
    model = InteractiveSegmenter(
        build_image_encoder(p),
        PromptEncoder(p.out_dim, (grid, grid), (p.train_ts, p.train_ts), 16),
        MaskDecoder(p.out_dim, TwoWayTransformer(2, p.out_dim, p.decoder_heads, p.decoder_mlp_dim)),
        image_format=p.image_format,
    )
    model.preset = p
    if p.detail:
        add_detail(model, p.detail)
    if p.context:
        add_context(model, p.context)
    if p.refine:
        add_refine(model, p.refine)
    return model


__all__ = ["PRESETS", "ModelPreset", "build_model", "get_preset", "list_attention", "list_presets"]
