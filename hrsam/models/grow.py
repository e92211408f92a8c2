"""Growing a trained model deeper without changing what it computes (progressive stacking).

``grow_preset(p, depth)`` inserts ``depth - p.depth`` new blocks in the middle of the trunk, after
the first ``p.depth // 2`` blocks: the old blocks keep their order, their cycle-scans, neck taps
and (SAM) global attention, so their indexes after the middle move up; an even number of new
blocks keeps every old block's plain/shifted parity. Each new block takes the attention role of
the old block it stands in for by position (new block ``mid + j`` is global where old block ``j``
is), and no scan or tap. ``grow(model, depth)`` builds that preset, loads the old weights at their
new indexes and zeroes each new block's two residual outputs (attention ``proj`` and the MLP's
last layer), so every new block starts as the identity and the grown model computes the old
model's outputs exactly; training then uses the new capacity from there.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hrsam.models.presets import ModelPreset, build_model

ENCODER = "image_encoder.blocks."
RESIDUAL_OUTPUTS = ("attn.proj.", "mlp.fc2.", "mlp.lin2.")  # HRSAM's and SAM's MLP names


def _check(p: ModelPreset, depth: int) -> int:
    added = depth - p.depth
    if added <= 0 or added % 2:
        raise ValueError(
            f"grow {p.name} from depth {p.depth} to {depth}: add a positive, even number of "
            "blocks (the old blocks keep their plain/shifted parity)"
        )
    if added > p.depth:  # new block j takes old block j's attention role
        raise ValueError(f"grow {p.name}: at most {p.depth} new blocks, not {added}")
    return added


def block_map(p: ModelPreset, depth: int) -> dict[int, int]:
    """Old block index -> its index in the grown trunk."""
    added, mid = _check(p, depth), p.depth // 2
    return {i: i if i < mid else i + added for i in range(p.depth)}


def grow_preset(p: ModelPreset, depth: int) -> ModelPreset:
    """``p`` with ``depth`` blocks: new ones in the middle (module docstring)."""
    moved = block_map(p, depth)
    mid, added = p.depth // 2, depth - p.depth
    new_globals = tuple(mid + j for j in range(added) if j in p.global_attn_indexes)
    return dataclasses.replace(
        p,
        depth=depth,
        ssm_indexes=tuple(moved[i] for i in p.ssm_indexes),
        out_indexes=tuple(moved[i] for i in p.out_indexes),
        global_attn_indexes=tuple(sorted((*(moved[i] for i in p.global_attn_indexes),
                                          *new_globals))),
    )  # fmt: skip


def _moved_key(key: str, moved: dict[int, int]) -> str:
    if not key.startswith(ENCODER):
        return key
    index, rest = key[len(ENCODER) :].split(".", 1)
    return f"{ENCODER}{moved[int(index)]}.{rest}"


def grow(model: nn.Module, depth: int, *, training: bool = False) -> nn.Module:
    """A new model of ``model``'s preset grown to ``depth`` that computes what ``model`` computes
    (module docstring). The new blocks' other weights come from the global torch RNG."""
    p = model.preset
    moved = block_map(p, depth)
    grown = build_model(grow_preset(p, depth), training=training)
    state = {_moved_key(k, moved): v for k, v in model.state_dict().items()}
    missing, unexpected = grown.load_state_dict(state, strict=False)
    new = set(range(depth)) - set(moved.values())
    fresh = tuple(f"{ENCODER}{i}." for i in sorted(new))
    if unexpected or not all(k.startswith(fresh) for k in missing):
        raise RuntimeError(f"grow {p.name}: unexpected {unexpected[:3]}, missing {missing[:3]}")
    with torch.no_grad():
        for name, param in grown.named_parameters():
            if name.startswith(fresh) and name.split(".", 3)[3].startswith(RESIDUAL_OUTPUTS):
                param.zero_()
    return grown


def widen_mask_features(model: nn.Module, channels: int) -> nn.Module:
    """``model`` (in place) with ``channels`` per-pixel mask features instead of SAM's
    ``out_dim // 8``: the decoder's last upscaling layer gains output channels (initialized as
    new layers are, so the new features are not zero) and each hypernetwork's last layer the
    matching rows, set to zero, so the mask logits stay exactly what they were; training then
    uses the new features. A detail path's fuse (`hrsam.models.detail`) widens with them: zero
    weights from the new features, zero corrections to them. A probe of the mask head's capacity
    (benchmarks.grow_probe)."""
    dec = model.mask_decoder
    if getattr(dec, "detail_refine", None) is not None:
        raise ValueError("widen the mask features before adding the refine path (add_refine)")
    conv = dec.output_upscaling[3]
    old = conv.out_channels
    if channels <= old:
        raise ValueError(f"mask features: {channels} must be more than the {old} there are")
    wide = nn.ConvTranspose2d(conv.in_channels, channels, conv.kernel_size, conv.stride)
    with torch.no_grad():
        wide.weight[:, :old] = conv.weight
        wide.bias[:old] = conv.bias
    dec.output_upscaling[3] = wide
    for mlp in dec.output_hypernetworks_mlps:
        last = mlp.layers[-1]
        grown = nn.Linear(last.in_features, channels)
        with torch.no_grad():
            grown.weight.zero_()
            grown.bias.zero_()
            grown.weight[:old] = last.weight
            grown.bias[:old] = last.bias
        mlp.layers[-1] = grown
    if getattr(dec, "detail_fuse", None) is not None:
        _widen_fuse(dec.detail_fuse, old, channels)
    return model


def _widen_fuse(fuse: nn.Module, old: int, channels: int) -> None:
    """``DetailFuse`` on ``channels`` upscaled features instead of ``old``, computing what it
    computed on the old ones and nothing for the new ones."""
    c1, c2 = fuse.conv1, fuse.conv2
    detail = c1.in_channels - old
    wide1 = nn.Conv2d(channels + detail, c1.out_channels, c1.kernel_size, c1.stride, c1.padding)
    wide2 = nn.Conv2d(c2.in_channels, channels, c2.kernel_size, c2.stride, c2.padding)
    with torch.no_grad():
        wide1.weight.zero_()
        wide1.weight[:, :old] = c1.weight[:, :old]
        wide1.weight[:, channels:] = c1.weight[:, old:]
        wide1.bias.copy_(c1.bias)
        wide2.weight.zero_()
        wide2.bias.zero_()
        wide2.weight[:old] = c2.weight
        wide2.bias[:old] = c2.bias
    fuse.conv1, fuse.conv2 = wide1, wide2


__all__ = ["block_map", "grow", "grow_preset", "widen_mask_features"]
