"""The encoders the backbone benchmark times (``python -m benchmarks.backbone``).

Holds the variant names (``preset:attention:kernel``, a bare preset, ``official:sam_vit_b``, a
``+compile`` suffix) and the preset each resolves to, the official ``segment-anything`` model
(built without its package ``__init__``) with the check of our SAM encoder against it, and the
memory estimate that turns a case into an ``oom`` row. `benchmarks.backbone` measures them;
`benchmarks.backbone_rows` reads the rows.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import sys
import types

import torch
from torch import nn

from hrsam.attention import list_attention, list_kernels
from hrsam.models import get_preset
from hrsam.models.presets import build_image_encoder
from hrsam.models.sam_encoder import BIAS_CHUNK_BYTES

OFFICIAL = "official:sam_vit_b"  # segment-anything's own ViT-B: a row of its own
COMPILE = "+compile"  # variant suffix: the encoder under torch.compile
DEFAULT_VARIANTS = [
    OFFICIAL,
    "sam_vit_b",
    "sam_vit_b:global:math",
    "sam_vit_b:global:sdpa",
    "hrsam_vit_b:shifted_kv:sdpa",
    "hrsampp_vit_b:shifted_kv:sdpa",
]


def parse_variant(v: str) -> tuple[str, str | None, str]:
    """``preset:attention:kernel``, or ``preset`` alone: its own attention and kernel ``auto``, as
    `build_model` builds it by default (an optional ``+compile`` suffix is ignored here). The
    official encoder computes as ``sam_vit_b:global:math`` does (materialized scores)."""
    if v == OFFICIAL:
        return "sam_vit_b", "global", "math"
    parts = v.removesuffix(COMPILE).split(":")
    if len(parts) == 1:
        return parts[0], None, "auto"
    if len(parts) != 3:
        raise ValueError(f"variant {v!r} must be a preset or preset:attention:kernel")
    return parts[0], parts[1], parts[2]


def variant_preset(v: str, device, dtype):
    """The preset of a variant with its kernel resolved for ``device`` and ``dtype``."""
    preset_name, attention, kernel = parse_variant(v)
    asked = {"kernel": kernel} | ({"attention": attention} if attention else {})
    return get_preset(preset_name, **asked).for_device(device, dtype)


def official_modeling():
    """``segment_anything.modeling`` without running the package ``__init__`` (which imports
    torchvision); None when segment-anything is not installed."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None:
        return None
    if "segment_anything" not in sys.modules:
        pkg = types.ModuleType("segment_anything")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["segment_anything"] = pkg
    return importlib.import_module("segment_anything.modeling")


class OfficialSam(nn.Module):
    """The official ViT-B image encoder, prompt encoder and mask decoder at input size ``ts``,
    with our model's ``encode`` / ``decode`` calls (random weights, as every row here)."""

    def __init__(self, modeling, preset, ts: int) -> None:
        super().__init__()
        g = ts // 16
        self.image_encoder = modeling.ImageEncoderViT(
            img_size=ts,
            embed_dim=preset.embed_dim,
            depth=preset.depth,
            num_heads=preset.num_heads,
            mlp_ratio=4.0,
            out_chans=preset.out_dim,
            qkv_bias=True,
            norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=preset.window_size,
            global_attn_indexes=preset.global_attn_indexes,
        )
        self.prompt_encoder = modeling.PromptEncoder(
            embed_dim=preset.out_dim,
            image_embedding_size=(g, g),
            input_image_size=(ts, ts),
            mask_in_chans=16,
        )
        self.mask_decoder = modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2,
                embedding_dim=preset.out_dim,
                mlp_dim=preset.decoder_mlp_dim,
                num_heads=preset.decoder_heads,
            ),
            transformer_dim=preset.out_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )

    def encode(self, x):
        return self.image_encoder(x)

    def decode(self, emb, points, labels):
        sparse, dense = self.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        return self.mask_decoder(
            image_embeddings=emb,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def official_error(official: OfficialSam, x, emb, ts: int) -> float:
    """Max abs difference between the official encoder's output ``emb`` on ``x`` and our SAM
    encoder (``sdpa``) with the official weights loaded."""
    preset = dataclasses.replace(get_preset("sam_vit_b"), img_size=ts, kernel="sdpa")
    ours = build_image_encoder(preset).to(x.device, x.dtype)
    ours.load_state_dict(official.image_encoder.state_dict(), strict=True)
    with torch.no_grad():
        return (ours.eval()(x) - emb).abs().max().item()


def all_variants() -> list[str]:
    out = [OFFICIAL, "sam_vit_b:global:math", "sam_vit_b:global:sdpa", "sam_vit_b:window:sdpa"]
    out += [
        f"hrsam_vit_b:{a}:{k}" for a in list_attention() if a != "global" for k in list_kernels()
    ]
    return [*out, "hrsampp_vit_b:shifted_kv:sdpa"]


def estimate_bytes(preset, attention: str, kernel: str, ts: int, itemsize: int) -> float:
    """Rough peak bytes of an inference forward: activations plus materialized scores."""
    g = ts // 16
    tokens = g * g + sum((s // 16) ** 2 for s in preset.anchor_sizes)
    act = tokens * preset.embed_dim * itemsize * 12  # residual, qkv, MLP hidden, copies
    scores = 0.0
    materialized = kernel == "math"
    if attention == "global" and preset.family == "sam":
        if materialized:
            # scores, bias and softmax of one global block: (heads, L, L) each
            scores = 3.0 * preset.num_heads * tokens**2 * itemsize
        else:
            # the rel-pos bias of a block of queries (hrsam.models.sam_encoder), plus the
            # kernel's copy of it
            per_query = preset.num_heads * tokens * itemsize
            queries = max(1, min(tokens, BIAS_CHUNK_BYTES // per_query))
            scores = 2.0 * queries * per_query
    elif materialized:
        scores = 3.0 * preset.num_heads * tokens * preset.window_size**2 * itemsize * 1.6
    return act + scores


def get_kernel_reasons(kernel: str, device, dtype) -> list[str]:
    """Why ``kernel`` cannot run on ``device`` in ``dtype`` (empty: it can); SAM rows ask the
    kernel alone, their attention pattern being SAM's own."""
    from hrsam.attention import get_kernel

    return get_kernel(kernel).support(device, dtype)
