"""The tiny presets' pretrained weights, shipped with the package as model hubs ship them: one
safetensors file per preset (tensors only, no pickle) beside a manifest that says how it was made.

    hrsam/pretrained/<preset>.safetensors   the state dict of ``build_model(preset)``
    hrsam/pretrained/<preset>.json          sha256, the exact command, commit, steps, wall time,
                                            machine (CPU, threads, torch), the recipe, the first
                                            steps' losses and the validation figures

They are made by ``python -m ablations.pretrain PRESET`` (its recipe:
``ablations/conf/pretrain.yaml``); the embedded default's sweeps finetune from them
(``train.base=pretrained``) and record the base by its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from hrsam.models.checkpoint import CheckpointError

FOLDER = Path(__file__).parent
SUFFIX = ".safetensors"
ENV = "HRSAM_PRETRAINED"  # another folder of weights and manifests (tests, a user's own bases)


def folder_of(folder: Path | None = None) -> Path:
    """``folder``, else ``$HRSAM_PRETRAINED``, else the package's own."""
    return Path(folder or os.environ.get(ENV) or FOLDER)


def weights_path(preset: str, folder: Path | None = None) -> Path:
    return folder_of(folder) / f"{preset}{SUFFIX}"


def manifest_path(preset: str, folder: Path | None = None) -> Path:
    return folder_of(folder) / f"{preset}.json"


def available(folder: Path | None = None) -> list[str]:
    """The presets that have both a weights file and a manifest here."""
    folder = folder_of(folder)
    return sorted(
        p.stem for p in folder.glob(f"*{SUFFIX}") if manifest_path(p.stem, folder).is_file()
    )


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(preset: str, folder: Path | None = None) -> dict:
    """The manifest of ``preset``'s weights; `CheckpointError` naming the presets that have one."""
    path = manifest_path(preset, folder)
    if not path.is_file() or not weights_path(preset, folder).is_file():
        have = ", ".join(available(folder)) or "none"
        raise CheckpointError(
            f"no pretrained weights for preset {preset!r} in {folder_of(folder)}; "
            f"pretrained: {have}"
        )
    return json.loads(path.read_text())


def verify(preset: str, folder: Path | None = None) -> dict:
    """The manifest, after checking that the weights file's sha256 is the one it records."""
    info = manifest(preset, folder)
    got = sha256(weights_path(preset, folder))
    if got != info["sha256"]:
        raise CheckpointError(
            f"{weights_path(preset, folder)} has sha256 {got[:12]}..., its manifest says "
            f"{info['sha256'][:12]}...: the file changed after it was made; rebuild it with "
            f"`{info.get('command', 'python -m ablations.pretrain ' + preset)}`"
        )
    return info


def load_state(preset: str, folder: Path | None = None) -> dict[str, Tensor]:
    """The verified state dict of ``preset``'s pretrained weights (on the CPU)."""
    from safetensors.torch import load_file

    verify(preset, folder)
    path = weights_path(preset, folder)
    try:
        return load_file(str(path))
    except Exception as e:  # a header or a length that does not parse
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None


def save(model: nn.Module, preset: str, info: dict, folder: Path | None = None) -> dict:
    """Writes ``model``'s state dict as ``<preset>.safetensors`` and ``info`` plus the file's
    sha256 as its manifest, each through a temporary file and a rename (the weights first: a
    manifest never names a file that is not complete). Returns the manifest."""
    from safetensors.torch import save_file

    folder = folder_of(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    target = weights_path(preset, folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"preset": preset, "format": "hrsam-bench"})
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the shipped file private
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    info = {"preset": preset, "file": target.name, "sha256": sha256(target), **info}
    text = json.dumps(info, indent=1) + "\n"
    tmp_manifest = manifest_path(preset, folder).with_suffix(".json.tmp")
    tmp_manifest.write_text(text)
    tmp_manifest.replace(manifest_path(preset, folder))
    return info


def final_ts(info: dict) -> int:
    """The ts a base trained at last: its last stage's (``stages``) or its training's."""
    stages = info.get("stages") or []
    return int(stages[-1]["ts"] if stages else info["train"]["ts"])


def state_sha256(state: dict[str, Tensor]) -> str:
    """A digest of a state dict's names, dtypes, shapes and bytes (order-independent)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
