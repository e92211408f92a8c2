"""The deterministic synthetic high-resolution dataset, in two generator versions.

* version 3 (the default): scenes of several objects drawn at their native size, each object an
  evaluation instance, with look-alike distractors touching their targets, lobes joined by thin
  necks, holes and 1-3 px structure (`hrsam.data.scenes`). Stored as ``<name>.png`` plus
  ``<name>_labels.png`` (instance ids); a sample is one (scene, instance) pair named
  ``<name>_<id>``.
* version 2: one jagged blob per image with holes and thin branches on a textured background,
  kept reproducible byte for byte (``data.version=2``). ``stroke`` scales that structure
  (branch width and hole size up, outline jaggedness down); ``contrast`` scales how far the
  object's mean colour sits from the background's.

Generated once into a folder per generator spec (``<root>/v<version>_<size>px_...``) with a
manifest written last, so a half-written folder is regenerated rather than used. The same seed
gives the same bytes, and the val split is the same whatever ``n_train`` is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hrsam.data.scenes import MAX_OBJECTS, SceneSpec, make_scene
from hrsam.interactive.evaluate import Sample

MANIFEST = "manifest.json"
VERSION = 3  # 3: multi-object scenes (hrsam.data.scenes); 2: one blob per image
VERSIONS = (2, 3)
DEFAULT_OBJECTS = "{}-{}".format(*SceneSpec.objects)  # "2-4"
VAL_OFFSET = 500_000  # val sample i is generated from seed index VAL_OFFSET + i


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float background: a few random sinusoids per channel plus noise."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        acc = np.full((h, w), rng.uniform(60, 190), np.float32)
        for _ in range(4):
            fy, fx = rng.uniform(-0.05, 0.05, 2)
            acc += rng.uniform(10, 30) * np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * math.pi))
        out[..., c] = acc
    return out + rng.normal(0, 8, (h, w, 3)).astype(np.float32)


def _object_mask(rng: np.random.Generator, h: int, w: int, stroke: float = 1.0) -> np.ndarray:
    """Jagged star-shaped blob + holes + thin branches, as a bool (H, W) mask. The random draws
    do not depend on ``stroke``: the same seed gives the same object, coarser or finer."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    r0 = rng.uniform(0.12, 0.22) * min(h, w)
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(theta, r0)
    for k in range(2, 9):  # smooth lobes
        radius += r0 * rng.uniform(0, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    for k in (40, 73, 111):  # high-frequency jagged boundary
        amp = r0 * rng.uniform(0.01, 0.03) / stroke
        radius += amp * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    dist = np.hypot(yy - cy, xx - cx)
    mask = dist < radius
    for _ in range(rng.integers(2, 6)):  # holes
        a, rr = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.6) * r0
        hy, hx = cy + rr * math.sin(a), cx + rr * math.cos(a)
        mask &= np.hypot(yy - hy, xx - hx) > rng.uniform(0.03, 0.1) * r0 * stroke
    for _ in range(rng.integers(4, 9)):  # thin branches from the blob outwards
        a = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(1.0, 2.2) * r0
        width = rng.uniform(0.6, 1.6) * stroke  # half-width in px: 1-3 px wide at stroke 1
        ux, uy = math.cos(a), math.sin(a)
        along = (xx - cx) * ux + (yy - cy) * uy
        across = np.abs(-(xx - cx) * uy + (yy - cy) * ux)
        mask |= (along > 0) & (along < length) & (across < width)
    return mask


def make_sample(
    seed: int, size: int, stroke: float = 1.0, contrast: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 (H, W, 3), mask bool (H, W)) pair; long side ``size``."""
    rng = np.random.default_rng(seed)
    aspect = rng.uniform(0.6, 1.0)
    h, w = (size, round(size * aspect)) if rng.random() < 0.5 else (round(size * aspect), size)
    mask = _object_mask(rng, h, w, stroke)
    image = _texture(rng, h, w)
    obj = _texture(rng, h, w) * 0.6 + rng.uniform(40, 110, 3).astype(np.float32)
    if contrast != 1 and mask.any() and (~mask).any():  # no random draw: the same object
        shift = obj[mask].mean(0) - image[~mask].mean(0)
        obj += (contrast - 1) * shift
    image[mask] = obj[mask]
    return np.clip(image, 0, 255).astype(np.uint8), mask


def parse_objects(objects: str | int) -> tuple[int, int]:
    """``"3-6"`` -> (3, 6); ``4`` or ``"4"`` -> (4, 4). A bad value is a one-line ValueError."""
    text = str(objects).strip()
    try:
        lo, _, hi = text.partition("-")
        pair = (int(lo), int(hi or lo))
    except ValueError:
        raise ValueError(f"objects={objects!r} must be N or MIN-MAX objects per scene") from None
    if not 1 <= pair[0] <= pair[1] <= MAX_OBJECTS:
        raise ValueError(
            f"objects={text} must be N or MIN-MAX objects per scene with "
            f"1 <= MIN <= MAX <= {MAX_OBJECTS}"
        )
    return pair


@dataclass(frozen=True)
class Spec:
    """One generated dataset: the one home of the generator's defaults (``DataConfig``'s synthetic
    keys and every entry point default to these; a scene's own defaults are `SceneSpec`'s).
    A spec that cannot be drawn is a one-line ValueError when built."""

    n_train: int = 64
    n_val: int = 16
    size: int = SceneSpec.size
    seed: int = 0
    stroke: float = SceneSpec.stroke
    contrast: float = SceneSpec.contrast
    version: int = VERSION
    objects: str = DEFAULT_OBJECTS

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(
                f"version={self.version} must be one of {', '.join(map(str, VERSIONS))}"
            )
        if self.size < 64:
            raise ValueError(f"size={self.size} must be >= 64 px")
        if not 0.5 <= self.stroke <= 8:
            raise ValueError(f"stroke={self.stroke} must be in [0.5, 8]")
        if not 0 <= self.contrast <= 8:
            raise ValueError(f"contrast={self.contrast} must be in [0, 8]")
        self.scene()

    def scene(self) -> SceneSpec | None:
        """What the scene generator draws (version 3), None for version 2's one blob."""
        if self.version < 3:
            return None
        return SceneSpec(self.size, parse_objects(self.objects), self.stroke, self.contrast)

    def folder(self, root: str | Path) -> Path:
        """``root/v<version>_<size>px_<n_train>+<n_val>_s<seed>[_stroke<x>][_contrast<y>]
        [_objects<a-b>]``: the folder of this spec (only what differs from a default is named)."""
        suffix = "" if self.stroke == 1 else f"_stroke{self.stroke:g}"
        suffix += "" if self.contrast == 1 else f"_contrast{self.contrast:g}"
        if self.version >= 3 and str(self.objects) != DEFAULT_OBJECTS:
            suffix += f"_objects{self.objects}"
        name = f"v{self.version}_{self.size}px_{self.n_train}+{self.n_val}_s{self.seed}{suffix}"
        return Path(root) / name

    def recorded(self) -> dict:
        """The spec as the folder's manifest records it."""
        keys = ("version", "n_train", "n_val", "size", "seed")
        out: dict = {k: getattr(self, k) for k in keys}
        for k in ("stroke", "contrast"):  # named only where they differ from 1
            if getattr(self, k) != 1:
                out[k] = getattr(self, k)
        if self.version >= 3:
            out["objects"] = str(self.objects)
        return out


def spec_folder(root: str | Path, **spec) -> Path:
    """The folder `generate` writes ``spec`` (`Spec`'s fields) into under ``root``."""
    return Spec(**spec).folder(root)


def generate(root: str | Path, progress: Callable[[int, int], None] | None = None, **spec) -> Path:
    """Writes the dataset of ``spec`` (`Spec`'s fields, its defaults for the rest) into
    ``Spec(**spec).folder(root)`` unless a complete one is there; returns that folder. Each
    generator spec has its own folder, so entry points asking for different specs under one
    ``root`` never regenerate each other's data."""
    spec = Spec(**spec)
    root = spec.folder(root)
    manifest = root / MANIFEST
    if manifest.exists() and json.loads(manifest.read_text()).get("spec") == spec.recorded():
        return root
    total = spec.n_train + spec.n_val
    files: dict[str, list] = {}
    scene = spec.scene()
    for i in range(total):
        split = "train" if i < spec.n_train else "val"
        (root / split).mkdir(parents=True, exist_ok=True)
        index = i if split == "train" else VAL_OFFSET + i - spec.n_train
        name = f"{i:05d}"
        seed = spec.seed * 1_000_003 + index
        if scene is None:
            image, mask = make_sample(seed, spec.size, spec.stroke, spec.contrast)
            Image.fromarray(image).save(root / split / f"{name}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / split / f"{name}_mask.png")
            files.setdefault(split, []).append(name)
        else:
            image, labels = make_scene(seed, scene)
            Image.fromarray(image).save(root / split / f"{name}.png", compress_level=1)
            Image.fromarray(labels).save(root / split / f"{name}_labels.png", compress_level=1)
            ids = [int(v) for v in np.unique(labels) if v]
            files.setdefault(split, []).extend(f"{name}_{k}" for k in ids)
        if progress is not None:
            progress(i + 1, total)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"spec": spec.recorded(), "files": files}, indent=1))
    tmp.replace(manifest)  # written last: its presence means the folder is complete
    return root


class SyntheticDataset:
    """The ``synthetic`` dataset: a split of a generated folder (generated on first use). Version 3
    samples are (scene, instance) pairs; the decoded scenes of the last `CACHE` images are kept,
    so a training that draws instances at random decodes each scene once."""

    CACHE = 512

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        progress: Callable[[int, int], None] | None = None,
        **spec,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r} must be 'train' or 'val'")
        self.root = generate(root, progress, **spec)
        self.split = split
        drawn = Spec(**spec)
        self.version, self.size = drawn.version, drawn.size
        self.names = json.loads((self.root / MANIFEST).read_text())["files"].get(split, [])
        self._scenes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _scene(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        if stem not in self._scenes:
            if len(self._scenes) >= self.CACHE:
                self._scenes.pop(next(iter(self._scenes)))
            folder = self.root / self.split
            image = np.asarray(Image.open(folder / f"{stem}.png").convert("RGB"))
            labels = np.asarray(Image.open(folder / f"{stem}_labels.png"))
            self._scenes[stem] = (image, labels)
        return self._scenes[stem]

    def __getitem__(self, i: int) -> Sample:
        name = self.names[i]
        if self.version >= 3:
            stem, _, k = name.rpartition("_")
            image, labels = self._scene(stem)
            return Sample(name, image, labels == int(k))
        folder = self.root / self.split
        image = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
        mask = np.asarray(Image.open(folder / f"{name}_mask.png")) > 127
        return Sample(name, image, mask)
