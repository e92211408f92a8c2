"""A pretrained base's first steps recomputed from its manifest alone
(``python -m ablations.pretrain --reproduce K PRESET``): the initial weights from the seed, only
the scenes those steps draw, generated alone, and the manifest's first-stage TrainConfig and thread
count; the losses are compared with the recorded ones."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from hrsam import names


class _StopError(Exception):
    """Raised from the progress callback to end a training after its first steps."""


class _SparseScenes:
    """The training set as the manifest's first steps see it: its length from the manifest and
    only the scenes those steps draw, generated alone (`hrsam.data.scenes.make_scene` from the
    same seed the generator gives them)."""

    def __init__(self, info: dict) -> None:
        from hrsam.data.synthetic import Spec

        d = info["data"]
        self.n = d["objects_train"]
        self.names = {i: name for i, name in info["first_samples"]}
        fields = {f.name for f in dataclasses.fields(Spec)}
        self.spec = Spec(**{k: v for k, v in d.items() if k in fields}).scene()
        self.seed = d.get("seed", 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from hrsam.data.scenes import make_scene
        from hrsam.interactive.evaluate import Sample

        name = self.names[i]
        stem, _, k = name.rpartition("_")
        image, labels = make_scene(self.seed * 1_000_003 + int(stem), self.spec)
        return Sample(name, image, labels == int(k))


def reproduce(preset: str, k: int, folder: Path | None = None) -> tuple[list[float], list[float]]:
    """(recorded, recomputed) losses of the manifest's first ``k`` steps, recomputed from the
    manifest alone with its thread count."""
    import torch

    from hrsam import pretrained
    from hrsam.train.loop import TrainConfig, train

    info = pretrained.manifest(preset, folder)
    k = min(k, len(info["first_losses"]))
    tc = TrainConfig(**info["train"])
    torch.set_num_threads(info["machine"]["threads"])
    from ablations.pretrain import build_seeded

    # the detail path stage 1 trained with (manifests without the field predate the path)
    model = build_seeded(preset, tc, info.get("init_detail", 0))
    if pretrained.state_sha256(model.state_dict()) != info["init_sha256"]:
        print(f"{preset}: the initial weights differ from the manifest's", file=sys.stderr)
    losses: list[float] = []

    def on_step(step: int, values: dict) -> None:
        losses.append(values[names.TRAIN_LOSS])
        if step >= k:
            raise _StopError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            train(model, _SparseScenes(info), tc, tmp, resume=False, on_step=on_step)
        except _StopError:
            pass
    return info["first_losses"][:k], losses
