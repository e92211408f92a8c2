"""A trial's training, cached: trained once per training key, resumed from its last checkpoint,
finetuned from the preset's pretrained weights (``train.base=pretrained``, `hrsam.pretrained`)
or from a shared base training (``train.base=scratch`` with ``train.base_steps``).

``<sweep folder>/cache/train/<training key>/model.pt``: trials that need the same weights wait on
a lock and reuse the file (the kernel and scan backend are not in the key: they compute the same
function). ``<out>/_base/<base key>/model.pt``: one base training per preset and recipe for every
sweep under ``out``. Both are trained with the resolved `Resolved.train_preset` /
``base_preset`` (this device's default scan backend, the kernel ``auto`` resolves to for a
training with a backward pass here) and loaded by the trial with its own kernel and backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ablations.resolve import Resolved
from hrsam import names

log = logging.getLogger("ablations.training")


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file and a rename: readers never see half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(resolved: Resolved, preset, tc):
    """The model to train: initial weights from ``tc.seed`` and nothing before it; the kernel
    ``auto`` resolved for a training (backward pass) here in the training's precision."""
    from hrsam.models import build_model
    from hrsam.precision import dtype
    from hrsam.train.loop import training_precision

    device = resolved.device
    torch.manual_seed(tc.seed)
    where = {"dtype": dtype(training_precision(tc, device)), "training": True}
    return build_model(preset, device=device, **where).to(device)


def train_base(resolved: Resolved, dataset, out: Path, progress: Callable) -> tuple[Path, dict]:
    """The shared base training (`TrialSpec.base`): the preset's own architecture trained with
    the trial's recipe for ``train.base_steps`` steps, once per key for every sweep under
    ``out`` (``<out>/_base/<key>/model.pt``; a killed one resumes). Returns its checkpoint and
    {base_key, base_train_s (when it was trained), base_steps}."""
    from hrsam.models import save_checkpoint
    from hrsam.train.loop import train

    key, tc = resolved.spec.base.key, resolved.spec.base.train
    folder = out / "_base" / key
    ckpt, info_path = folder / "model.pt", folder / "base.json"
    with file_lock(folder / ".lock"):
        if ckpt.exists() and info_path.exists():
            progress(f"reusing base training {key}", force=True)
            return ckpt, json.loads(info_path.read_text())
        model = _build(resolved, resolved.base_preset, tc)
        start = time.perf_counter()
        train(
            model,
            dataset,
            tc,
            folder,
            progress=lambda s, n, loss: progress(f"base training {s}/{n} loss {loss:.3f}"),
        )
        info = {"base_key": key, names.BASE_TRAIN_S: time.perf_counter() - start}
        info[names.BASE_STEPS] = tc.steps
        save_checkpoint(model.cpu(), ckpt, training=asdict(tc))
        write_atomic(info_path, json.dumps(info))
        return ckpt, info


def _base_state(resolved: Resolved, dataset, out: Path, progress: Callable) -> tuple[dict, dict]:
    """The base's state dict and facts: the preset's pretrained weights (verified against their
    manifest's sha256) or the shared base training (`train_base`)."""
    from hrsam import pretrained
    from hrsam.models.checkpoint import read_state

    base = resolved.spec.base
    if base.pretrained:
        info = pretrained.verify(base.preset)
        progress(f"finetuning from pretrained {base.preset} ({info['sha256'][:12]})", force=True)
        facts = {"base_key": base.key, names.BASE_SHA256: info["sha256"]}
        facts[names.BASE_STEPS] = info["steps"]
        return pretrained.load_state(base.preset), facts
    ckpt, facts = train_base(resolved, dataset, out, progress)
    return read_state(ckpt)["state_dict"], facts


def train_cached(
    resolved: Resolved, folder: Path, progress: Callable, series=None
) -> tuple[Path, dict]:
    """The checkpoint of this trial's training under the sweep ``folder``, trained once per
    training key. Returns (its path, {train_s, train_loss} and the base's facts)."""
    from hrsam.models import save_checkpoint
    from hrsam.models.checkpoint import init_from
    from hrsam.train.loop import train

    spec = resolved.spec
    cache = folder / "cache" / "train" / spec.train_key
    ckpt, info_path = cache / "model.pt", cache / "train.json"
    with file_lock(cache / ".lock"):
        if ckpt.exists() and info_path.exists():
            progress(f"reusing training {spec.train_key}", force=True)
            return ckpt, json.loads(info_path.read_text())
        dataset = spec.data.build("train")
        model = _build(resolved, resolved.train_preset, spec.train)
        base = {}
        if spec.base is not None:  # finetune from pretrained weights or a shared base training
            state, base = _base_state(resolved, dataset, folder.parent, progress)
            copied, fresh = init_from(model, state)
            log.info("initialized %d tensors from the base %s; fresh: %s", copied, base, fresh)
            base[names.BASE_FRESH_TENSORS] = len(fresh)
        start = time.perf_counter()
        state = train(
            model,
            dataset,
            spec.train,
            cache,
            progress=lambda s, n, loss: progress(f"train {s}/{n} loss {loss:.3f}"),
            on_step=series,
        )
        info = {
            names.TRAIN_S: time.perf_counter() - start,
            names.TRAIN_LOSS: state.losses[-1],
            **base,
        }
        save_checkpoint(model.cpu(), ckpt, training=asdict(spec.train), base=base.get("base_key"))
        write_atomic(info_path, json.dumps(info))
        return ckpt, info
