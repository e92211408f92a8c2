"""What the app can show: the finished trials of sweep folders (their trained checkpoints) and
presets with a checkpoint; images of a dataset's validation split and uploads. Trials are read
from their ``result.json`` as plain JSON (the library does not import the harness)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelEntry:
    id: str
    label: str
    preset: str
    checkpoint: str | None
    ts: int


def trials_of(sweeps: Path) -> list[ModelEntry]:
    """Every FINISHED trial under ``sweeps`` (``<experiment>/trials/<id>/result.json``) whose
    weights file exists, labelled by experiment and setting, evaluated at its own ts."""
    out = []
    for path in sorted(Path(sweeps).glob("*/trials/*/result.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        weights = r.get("provenance", {}).get("weights")
        if r.get("status") != "FINISHED" or not weights or not Path(weights).is_file():
            continue
        resolved = r.get("resolved", {})
        out.append(
            ModelEntry(
                r["trial_id"],
                f"{r.get('experiment', path.parts[-4])}: {r.get('label', r['trial_id'])}",
                resolved.get("model.preset", "hrsam_tiny"),
                weights,
                int(resolved.get("eval.ts", 512)),
            )
        )
    return out


def preset_entry(spec: str, ts: int) -> ModelEntry:
    """``PRESET`` or ``PRESET=CHECKPOINT`` (random weights without one)."""
    from hrsam.models import list_presets

    preset, _, ckpt = spec.partition("=")
    if preset not in list_presets():
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(list_presets())}")
    if ckpt and not Path(ckpt).is_file():
        raise ValueError(f"checkpoint {ckpt!r} does not exist")
    label = f"{preset} ({Path(ckpt).name if ckpt else 'random weights'})"
    return ModelEntry(f"preset-{preset}", label, preset, ckpt or None, ts)


def load(entry: ModelEntry):
    """The entry's model, on the CPU, in eval mode (kernel ``auto`` for this machine)."""
    from hrsam.models import load_checkpoint, load_model
    from hrsam.models.checkpoint import FORMAT, read_state

    if entry.checkpoint and read_state(entry.checkpoint).get("format") == FORMAT:
        model = load_checkpoint(entry.checkpoint)
    else:
        model = load_model(entry.preset, entry.checkpoint)
    return model.eval()


@dataclass
class ImageEntry:
    id: str
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    gt: np.ndarray | None  # (H, W) bool, validation objects only


def validation_images(data, limit: int) -> list[ImageEntry]:
    """The first ``limit`` objects of a dataset's validation split (`hrsam.data.DataConfig`)."""
    ds = data.build("val")
    return [
        ImageEntry(f"val-{i}", s.name, s.image, np.asarray(s.gt, bool))
        for i, s in ((i, ds[i]) for i in range(min(limit, len(ds))))
    ]
