"""Resolution: a requested `TrialSpec` settled once, where the trial runs, into `Resolved`.

The job calls `resolve` once; training, evaluation, the benchmark and the record all read the
`Resolved` it returns. Settled here: the device (``auto`` -> this machine's), the preset with
the trial's architecture keys (looked up once), the attention kernel (``auto`` -> the fastest
exact kernel probed to run on this device in the trial's precision), the scan backend
(``auto`` -> this device's default; trainings use that default too, since every backend
computes the same function) and whether this device can run the variant at all
(`UnsupportedError`, before any training).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass

import torch

from ablations.spec import TrialSpec
from hrsam.models import ModelPreset
from hrsam.models import presets as preset_registry
from hrsam.precision import dtype
from hrsam.ssm import scan as scan_backends


class UnsupportedError(RuntimeError):
    """This device cannot run the trial: the kernel's / scan backend's own support() reasons."""

    def __init__(self, reason: str, resolved: dict) -> None:
        super().__init__(reason)
        self.resolved = resolved


@dataclass(frozen=True)
class Resolved:
    """A trial as it runs here: the spec, the device, and the presets it builds."""

    spec: TrialSpec
    device: torch.device
    preset: ModelPreset  # evaluated and timed: architecture, kernel and scan for this device
    train_preset: ModelPreset  # trained: the same architecture, this device's default scan
    base_preset: ModelPreset  # the shared base training: the preset's own architecture

    @property
    def precision(self) -> str:
        return self.spec.precision

    @property
    def dtype(self) -> torch.dtype:
        return dtype(self.spec.precision)

    @property
    def hrsam(self) -> bool:
        return self.preset.family == "hrsam"

    def config(self, preset: ModelPreset | None = None) -> dict:
        """The requested tree with every value the job decided filled in (the record's
        ``resolved`` and ``config_resolved.yaml``); ``preset``: the one the loaded model
        reports, when it differs from the request's (a checkpoint's own architecture)."""
        p = preset or self.preset
        out = copy.deepcopy(self.spec.config)
        out["device"] = self.device.type
        out["model"].update(
            attention=p.attention,
            kernel=p.kernel,
            window_size=p.window_size,
            scan=p.scan if self.hrsam else None,
            cycle_repeats=p.cycle_repeats if self.hrsam else None,
            anchor_sizes=list(p.anchor_sizes) if p.anchor_sizes else None,
            detail=p.detail,
        )
        return out


def resolve(spec: TrialSpec) -> Resolved:
    """``spec`` settled on this machine: raises RuntimeError for a device that is not here and
    `UnsupportedError` when this device cannot run the kernel or scan backend."""
    device = torch.device(resolve_device(spec.device))
    m = spec.model
    arch = preset_registry.get_preset(m.preset, **m.arch)  # the one preset lookup
    asked = dataclasses.replace(arch, kernel=m.kernel) if m.kernel is not None else arch
    own = preset_registry.PRESETS[m.preset]  # the shared base training's architecture
    if arch.family == "hrsam":
        default = scan_backends.default_scan(device)  # the one scan resolution
        scan = m.scan if m.scan not in (None, "auto") else default
        asked = dataclasses.replace(asked, scan=scan)
        train = dataclasses.replace(arch, scan="none" if m.scan == "none" else default)
        own = dataclasses.replace(own, scan=default)
    else:
        train = arch
    preset = asked.for_device(device, dtype(spec.precision))
    resolved = Resolved(spec, device, preset, train, own)
    check_support(resolved, preset)
    return resolved


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when this job's machine has it, else ``cpu``; ``cuda`` without one
    is an error (not an unsupported variant: the request names a device that is not here)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but this machine has no CUDA device")
    return requested


def check_support(resolved: Resolved, preset: ModelPreset) -> None:
    """`UnsupportedError` unless ``preset``'s kernel runs here in the dtype the trial's
    precision gives it, and its scan backend runs here."""
    from hrsam.attention import variant_support

    device = resolved.device
    reasons = variant_support(preset.attention, preset.kernel, device, resolved.dtype)
    what = f"attention {preset.attention} with kernel {preset.kernel}"
    if not reasons and preset.family == "hrsam" and preset.scan != "none":
        reasons = scan_backends.get_scan(preset.scan).support(device)
        what = f"scan backend {preset.scan}"
    if reasons:
        precision = resolved.precision
        where = device.type if precision == "fp32" else f"{device.type} in {precision}"
        reason = f"{what} cannot run on {where}: {'; '.join(reasons)}"
        raise UnsupportedError(reason, resolved.config(preset))


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (model init, anything unseeded below);
    the data order, flips and clicks have their own generators seeded from the same seed."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
