"""Checkpoints: official SAM ``.pth`` files, the released HRSAM / HRSAM++ checkpoints, and our own
format (weights plus the preset and overrides that built them).

Every file is read with ``torch.load(weights_only=True)``: no pickle code from a checkpoint ever
runs. Loading is strict; missing, unexpected or mis-shaped keys fail with one message listing the
first few of each and their counts. Our own files are written atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

FORMAT = "hrsam-bench"
VERSION = 1

# official HRSAM (mmseg) prefixes -> ours (SAM's names); order matters: longest first
_OFFICIAL_HRSAM = (
    ("backbone.", "image_encoder."),
    ("neck.pos_embed_layer.", "prompt_encoder.pe_layer."),
    ("neck.point_embeds.", "prompt_encoder.point_embeddings."),
    ("neck.", "prompt_encoder."),
    ("decode_head.", "mask_decoder."),
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_state(path: str | os.PathLike) -> dict:
    """Loads a checkpoint file safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a checkpoint, or pickled code we refuse
        raise CheckpointError(f"{path} {_unreadable(e)}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _unreadable(e: Exception) -> str:
    """Why torch.load refused a file, in our words (torch's own advice to load it with
    ``weights_only=False`` is not ours to give: that would run code from the file)."""
    text = str(e)
    if m := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return (
            f"holds a pickled Python object ({m[1]}), not only tensors; it is not loaded (that "
            "would run code from the file): save a state dict (torch.save(model.state_dict()))"
        )
    if "zip archive" in text or "Unsupported operand" in text or "invalid load key" in text:
        return "is corrupt or not a PyTorch checkpoint (truncated, or not written by torch.save)"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"is not a readable checkpoint ({type(e).__name__}{': ' + first if first else ''})"


def _summary(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}{', ...' if len(keys) > limit else ''} ({len(keys)})"


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raises `CheckpointError` unless ``state`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_summary(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summary(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped keys: {_summary(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def load_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> nn.Module:
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


def init_from(model: nn.Module, state: Mapping[str, Tensor]) -> tuple[int, list[str]]:
    """Initializes ``model`` from ``state`` where names and shapes agree (a finetune of a base
    model whose architecture differs in a setting: another window size keeps every weight, no
    scan drops the scan's). Returns (tensors copied, the model's keys left at their init)."""
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(take, strict=False)
    return len(take), sorted(set(own) - set(take))


def remap_official_hrsam(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official HRSAM / HRSAM++ (mmseg ``backbone.``/``neck.``/``decode_head.``) -> our keys."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = {}
    for key, value in state.items():
        for old, new in _OFFICIAL_HRSAM:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def load_sam_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Loads an official segment-anything checkpoint (``image_encoder.``, ``prompt_encoder.``,
    ``mask_decoder.`` keys) strictly into a SAM preset."""
    return load_strict(model, read_state(path), str(path))


def load_official_hrsam(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Loads a released HRSAM / HRSAM++ checkpoint strictly (keys remapped, spec key lists)."""
    return load_strict(model, remap_official_hrsam(read_state(path)), str(path))


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **meta) -> Path:
    """Writes weights + the preset and overrides that built ``model``, atomically."""
    preset = getattr(model, "preset", None)
    if preset is None:
        raise CheckpointError("model has no preset; build it with hrsam.models.build_model")
    return atomic_save(checkpoint_record(model, **meta), path)


def checkpoint_record(model: nn.Module, **meta) -> dict:
    """Our format: weights plus the preset fields that built the model and free-form meta."""
    preset = model.preset
    config = {f: _plain(getattr(preset, f)) for f in preset.__dataclass_fields__}
    config["kernel"] = "auto"  # compute, not weights: chosen again where the file is loaded
    return {
        "format": FORMAT,
        "version": VERSION,
        "preset": preset.name,
        "config": config,
        "meta": {k: _plain(v) for k, v in meta.items()},
        "state_dict": model.state_dict(),
    }


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:  # a file object: the zip's inner folder is not the tmp name,
            torch.save(obj, f)  # so equal contents give equal bytes (checksums compare runs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _plain(v):
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def load_checkpoint(
    path: str | os.PathLike, *, device="cpu", dtype=torch.float32, **overrides
) -> nn.Module:
    """Builds the model recorded in one of our checkpoints and loads its weights strictly.

    ``overrides`` change only computation-side settings (``kernel``, ``scan``); ``device`` and
    ``dtype`` say where the model will run, which picks the kernel ``auto`` (`build_model`)."""
    state = read_state(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an {FORMAT} checkpoint (no format tag); load "
            "official SAM / HRSAM files with load_sam_checkpoint / "
            "load_official_hrsam"
        )
    return _from_record(state, str(path), overrides, {"device": device, "dtype": dtype})


def load_model(
    preset: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    device="cpu",
    dtype=torch.float32,
    **overrides,
) -> nn.Module:
    """``preset`` with ``checkpoint`` loaded, reading the file once: one of our checkpoints (the
    preset recorded in it is used), an official SAM file for SAM presets, a released HRSAM /
    HRSAM++ file for HRSAM presets. Without a checkpoint: the preset, randomly initialized.
    ``device`` and ``dtype``: where the model will run (the kernel ``auto`` is chosen for it)."""
    from hrsam.models.presets import build_model

    where = {"device": device, "dtype": dtype}
    if not checkpoint:
        return build_model(preset, **where, **overrides)
    state = read_state(checkpoint)
    if state.get("format") == FORMAT:
        return _from_record(state, str(checkpoint), overrides, where)
    model = build_model(preset, **where, **overrides)
    weights = state if model.preset.family == "sam" else remap_official_hrsam(state)
    return load_strict(model, weights, str(checkpoint))


def _from_record(state: dict, source: str, overrides: dict, where: dict) -> nn.Module:
    from hrsam.models.presets import ModelPreset, build_model

    config = dict(state["config"])
    for key in ("global_attn_indexes", "ssm_indexes", "out_indexes", "anchor_sizes"):
        config[key] = tuple(config[key])
    # an architecture key equal to the checkpoint's own value changes nothing
    same = {k for k, v in overrides.items() if k in config and _plain(v) == _plain(config[k])}
    overrides = {k: v for k, v in overrides.items() if k not in same - {"kernel", "scan"}}
    bad = sorted(set(overrides) - {"kernel", "scan"})
    if bad:
        raise CheckpointError(
            f"override {bad[0]!r} would change the weights' meaning; only "
            "kernel and scan can be overridden when loading"
        )
    overrides = dict(overrides)
    if overrides.get("scan") is not None and (overrides["scan"] == "none") != (
        config["scan"] == "none"
    ):
        if config["scan"] == "none":  # no cycle-scan modules: no backend to choose
            overrides.pop("scan")
        else:
            raise CheckpointError(
                f"override scan='none' would drop the cycle-scan modules of {source}; "
                "only the scan backend can be chosen when loading"
            )
    config.update(overrides)
    model = build_model(ModelPreset(**config), **where)
    return load_strict(model, state["state_dict"], source)
