"""What the app can show: the finished trials of sweep folders and of MLflow experiments (their
trained checkpoints) and presets with a checkpoint; images of the validation split each trial was
evaluated on (found where its sweep keeps it, never generated again) and uploads. Trials are read
from their ``result.json`` as plain JSON (the library does not import the harness); MLflow runs
through `hrsam.app.mlflow_trials`, which gives `trial_entry` the same flat keys."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from hrsam.data import DataConfig

log = logging.getLogger(__name__)

WEIGHTS = "weights"  # a trial's provenance entry (an MLflow tag too): its checkpoint's path
PHOTOS = DataConfig(name="photos", root="")  # images when nothing names a dataset: none to make


@dataclass(frozen=True)
class ModelEntry:
    id: str
    label: str
    preset: str
    checkpoint: str | None
    ts: int
    data: DataConfig | None = None  # a trial's evaluation data, where it was found


def trial_entry(
    trial_id: str, label: str, resolved: dict, weights: str | None, anchors: Iterable[Path]
) -> ModelEntry | None:
    """A finished trial from its flat resolved config (``model.preset``, ``eval.ts``,
    ``data.*``; values typed, or MLflow's strings) and its weights; None without a weights file.
    Its data is `trial_data` looked up from ``anchors``."""
    if not weights or not Path(weights).is_file():
        return None
    return ModelEntry(
        trial_id,
        label,
        str(resolved.get("model.preset", "hrsam_tiny")),
        weights,
        int(resolved.get("eval.ts", 512)),
        trial_data(resolved, [*anchors, Path(weights).parent], trial_id),
    )


def trials_of(sweeps: Path) -> list[ModelEntry]:
    """Every FINISHED trial under ``sweeps`` (``<experiment>/trials/<id>/result.json``, or one
    experiment's ``trials/<id>/result.json``) whose weights file exists, labelled by experiment
    and setting, evaluated at its own ts on its own data."""
    out = []
    sweeps = Path(sweeps).resolve()
    paths = sorted(sweeps.glob("*/trials/*/result.json")) + sorted(
        sweeps.glob("trials/*/result.json")
    )
    for path in paths:
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if r.get("status") != "FINISHED":
            continue
        label = f"{r.get('experiment', path.parts[-4])}: {r.get('label', r['trial_id'])}"
        weights = r.get("provenance", {}).get(WEIGHTS)
        entry = trial_entry(r["trial_id"], label, r.get("resolved", {}), weights, [path.parent])
        if entry is not None:
            out.append(entry)
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


# -- a trial's data, where its sweep keeps it ---------------------------------------------------


def data_config(flat: dict, prefix: str = "data.") -> DataConfig:
    """`DataConfig` from flat ``data.*`` keys (typed values, or MLflow's strings); a key the
    record lacks keeps its default. `ValueError` for a value that is not one."""
    kw = {}
    for f in fields(DataConfig):
        if prefix + f.name in flat:
            kw[f.name] = _typed(flat[prefix + f.name], type(f.default))
    return DataConfig(**kw)


def _typed(value, kind: type):
    """``value`` as ``kind`` (MLflow keeps params as text: ``"64"``, ``"1.0"``)."""
    if isinstance(value, kind):
        return value
    return int(float(value)) if kind is int else kind(value)


def _places(anchors: Iterable[Path]) -> list[Path]:
    """Each anchor and its ancestors, nearest first, then the working directory: where a
    relative ``data.root`` may have been resolved from (the folder the sweep ran in)."""
    out: dict[Path, None] = {}
    for a in [*anchors, Path.cwd()]:
        a = Path(a).resolve()
        for p in (a, *a.parents):
            out.setdefault(p, None)
    return list(out)


def present(data: DataConfig) -> bool:
    """Whether ``data`` can be read as it is, writing nothing: a synthetic spec's folder complete
    (its manifest, written last, names the same spec), a real dataset's layout in place."""
    if data.name == "photos":
        return True
    if data.name == "synthetic":
        from hrsam.data.synthetic import MANIFEST, spec_folder

        spec = {**data.synthetic_spec(), "seed": 0}
        folder = spec_folder(data.root, **spec)
        try:
            recorded = json.loads((folder / MANIFEST).read_text())["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return all(spec.get(k) == v for k, v in recorded.items())
    try:
        data.check()
    except (OSError, ValueError, KeyError):  # DatasetError, an unknown name
        return False
    return True


def trial_data(resolved: dict, anchors: Iterable[Path], who: str = "") -> DataConfig | None:
    """The data a trial was evaluated on: its ``data.*`` keys, ``data.root`` as recorded (from
    the folder the sweep ran in when relative: the first of ``anchors`` or their ancestors, then
    the working directory, that holds it). None, with a warning, when it is nowhere."""
    anchors = list(anchors)
    try:
        data = data_config(resolved)
    except (ValueError, TypeError) as e:
        log.warning("trial %s: its data config is not readable (%s)", who, e)
        return None
    root = Path(data.root).expanduser()
    if data.name == "photos":
        return data
    for place in [root] if root.is_absolute() else [p / root for p in _places(anchors)]:
        found = replace(data, root=str(place))
        if present(found):
            return found
    log.warning(
        "trial %s: its data (%s, data.root=%s) was found under none of %s or their parents",
        who, data.name, data.root, ", ".join(str(a) for a in anchors),
    )  # fmt: skip
    return None


def describe(data: DataConfig) -> str:
    """A dataset in a few words: ``synthetic v3_64px_2+2_s0``, ``davis /data/DAVIS``."""
    if data.name == "synthetic":
        from hrsam.data.synthetic import spec_folder

        return f"synthetic {spec_folder(data.root, **data.synthetic_spec()).name}"
    return data.name if data.name == "photos" else f"{data.name} {data.root}"


# -- images ----------------------------------------------------------------------------------------


@dataclass
class ImageEntry:
    id: str
    name: str  # the dataset's sample name: the gallery's and ious.csv's object name
    image: np.ndarray  # (H, W, 3) uint8
    gt: np.ndarray | None  # (H, W) bool, validation objects only
    dataset: str = ""  # `describe` of the data it comes from; "" for an upload


def validation_images(data: DataConfig, limit: int, first: int = 0) -> list[ImageEntry]:
    """The first ``limit`` objects of a dataset's validation split (`hrsam.data.DataConfig`),
    by their sample names, with ids ``val-<first>``, ``val-<first + 1>`` ..."""
    ds = data.build("val")
    what = describe(data)
    return [
        ImageEntry(f"val-{first + i}", s.name, s.image, np.asarray(s.gt, bool), what)
        for i, s in ((i, ds[i]) for i in range(min(limit, len(ds))))
    ]


def images_of(datasets: Iterable[DataConfig], limit: int) -> list[ImageEntry]:
    """The first ``limit`` validation objects of each dataset, in order, ids numbered across."""
    out: list[ImageEntry] = []
    for data in dict.fromkeys(datasets):
        out += validation_images(data, limit, len(out))
    return out
