"""Synthetic scenes (generator version 3): several objects per image, each an evaluation instance,
drawn at the image's native size, where corrective clicks carry information.

A scene is a textured background with ``objects`` objects painted in turn (later ones occlude
earlier ones). Every object is a lobed blob with holes and a jagged outline; some have a second
lobe joined by a thin neck, some thin branches 1-3 px wide (``stroke`` 1). Objects come in
appearance groups: a distractor shares its target's colour and texture and is placed so that it
touches or overlaps it, so the first click alone cannot say where one object ends and its twin
begins, and a negative click on the twin, or the previous mask, must. The label image holds
each pixel's instance (0: background); instances are disjoint by construction and an object
left with fewer than `MIN_AREA` of the image's pixels after occlusion is dropped.

Each object is drawn in its own bounding box, so a scene costs its pixel count a few times over,
not once per object: a 1024 px scene takes about 0.1 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_AREA = 0.002  # of the image: smaller visible remains of an object are not instances
MAX_OBJECTS = 12


@dataclass(frozen=True)
class SceneSpec:
    """What a scene generator draws. ``objects``: (min, max) objects per scene; ``stroke``
    scales the thin structure (1: branches and necks 1-3 px wide at the native size);
    ``contrast`` scales the colour distance of objects from the background."""

    size: int = 1024
    objects: tuple[int, int] = (2, 4)
    stroke: float = 1.0
    contrast: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = self.objects
        if not 1 <= lo <= hi <= MAX_OBJECTS:
            raise ValueError(
                f"objects={lo}-{hi} must be 1 <= min <= max <= {MAX_OBJECTS} objects per scene"
            )
        # the largest structure: a neck or branch (up to 3 px x stroke wide) must fit inside the
        # smallest object (radius >= 3 px x stroke)
        smallest = math.ceil(3 * self.stroke / RADIUS[0])
        if self.size < max(64, smallest):
            raise ValueError(
                f"size={self.size} px is below the largest structure of a scene with "
                f"stroke={self.stroke:g}: must be >= {max(64, smallest)} px"
            )


RADIUS = (0.12, 0.24)  # object radius as a fraction of the image's short side


def _texture(rng: np.random.Generator, h: int, w: int, y0=0, x0=0, freq: float = 0.05):
    """(H, W, 3) float texture: a few sinusoids per channel plus noise, evaluated on the window
    (y0:y0+h, x0:x0+w) of an infinite plane (so an object's texture is drawn in its box).
    Each plane wave is separable, sin(a + b) = sin a cos b + cos a sin b, so it costs two
    products per pixel instead of a sine."""
    yy = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        acc = np.full((h, w), rng.uniform(60, 190), np.float32)
        for _ in range(3):
            fy, fx = rng.uniform(-freq, freq, 2)
            amp, phase = rng.uniform(4, 14), rng.uniform(0, 2 * math.pi)
            a, b = fy * yy, fx * xx + phase
            acc += amp * np.sin(a) * np.cos(b)
            acc += amp * np.cos(a) * np.sin(b)
        out[..., c] = acc
    out += 6 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return out


@dataclass(frozen=True)
class Appearance:
    """An object's colour and texture seed: twins share one."""

    colour: np.ndarray
    texture_seed: int


def _shape(rng: np.random.Generator, r0: float, stroke: float):
    """An object's mask in its own box: (mask (h, w) bool, centre (y, x) inside the box).

    A lobed, jagged blob of radius ``r0`` with 1-3 holes; half the objects get a second lobe
    joined by a neck 2-6 px wide (x ``stroke``); 1-3 thin branches 2-6 px wide."""
    second = rng.random() < 0.5
    angle2 = rng.uniform(0, 2 * math.pi)
    r2 = r0 * rng.uniform(0.45, 0.7)
    gap = r0 + r2 + r0 * rng.uniform(0.2, 0.45)  # centre distance: the neck spans the gap
    n_branches = int(rng.integers(1, 4))
    reach = max(gap + r2 if second else r0, 1.9 * r0) + 4
    half = math.ceil(reach * 1.1)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    mask = _blob(rng, yy, xx, 0.0, 0.0, r0, stroke)
    if second:
        cy2, cx2 = gap * math.sin(angle2), gap * math.cos(angle2)
        mask |= _blob(rng, yy, xx, cy2, cx2, r2, stroke)
        mask |= _bar(yy, xx, 0.0, 0.0, angle2, gap, rng.uniform(1.0, 3.0) * stroke)
    for _ in range(n_branches):
        a = rng.uniform(0, 2 * math.pi)
        mask |= _bar(
            yy,
            xx,
            0.0,
            0.0,
            a,
            rng.uniform(1.3, 1.8) * r0,
            rng.uniform(1.0, 3.0) * stroke / 2 + 0.5,
        )
    return mask, (half, half)


def _blob(rng, yy, xx, cy: float, cx: float, r0: float, stroke: float) -> np.ndarray:
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(theta, r0)
    for k in range(2, 7):  # smooth lobes
        radius += r0 * rng.uniform(0, 0.1) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    for k in (37, 71):  # a jagged outline only high resolution resolves
        amp = r0 * rng.uniform(0.02, 0.04) / stroke
        radius += amp * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    mask = np.hypot(yy - cy, xx - cx) < radius
    for _ in range(int(rng.integers(1, 4))):  # holes
        a, rr = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.6) * r0
        hy, hx = cy + rr * math.sin(a), cx + rr * math.cos(a)
        mask &= np.hypot(yy - hy, xx - hx) > rng.uniform(0.06, 0.14) * r0 * stroke
    return mask


def _bar(yy, xx, cy: float, cx: float, angle: float, length: float, half_width: float):
    ux, uy = math.cos(angle), math.sin(angle)
    along = (xx - cx) * ux + (yy - cy) * uy
    across = np.abs(-(xx - cx) * uy + (yy - cy) * ux)
    return (along > 0) & (along < length) & (across < half_width)


def make_scene(seed: int, spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (image uint8 (H, W, 3), labels uint8 (H, W), 0 = background, 1.. = instances
    numbered in paint order with dropped ones skipped). Long side ``spec.size``."""
    rng = np.random.default_rng(seed)
    size = spec.size
    aspect = rng.uniform(0.7, 1.0)
    h, w = (size, round(size * aspect)) if rng.random() < 0.5 else (round(size * aspect), size)
    image = _texture(rng, h, w)
    background = image.mean((0, 1))
    labels = np.zeros((h, w), np.uint8)
    n = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
    short = min(h, w)
    placed: list[tuple[float, float, float, Appearance]] = []  # (cy, cx, r0, appearance)
    for i in range(n):
        r0 = rng.uniform(*RADIUS) * short
        twin_of = placed[int(rng.integers(len(placed)))] if placed and rng.random() < 0.6 else None
        if twin_of is None:
            colour = _far_colour(rng, background, spec.contrast)
            look = Appearance(colour, int(rng.integers(2**31)))
            cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        else:  # a distractor: same look, touching or overlapping its twin
            ty, tx, tr, look = twin_of
            a = rng.uniform(0, 2 * math.pi)
            d = (tr + r0) * rng.uniform(0.75, 0.95)
            cy = float(np.clip(ty + d * math.sin(a), 0.05 * h, 0.95 * h))
            cx = float(np.clip(tx + d * math.cos(a), 0.05 * w, 0.95 * w))
        shape, (oy, ox) = _shape(rng, r0, spec.stroke)
        _paint(image, labels, shape, round(cy) - oy, round(cx) - ox, look, i + 1, background)
        placed.append((cy, cx, r0, look))
    return np.clip(image, 0, 255).astype(np.uint8), _keep_visible(labels)


def _far_colour(rng, background: np.ndarray, contrast: float) -> np.ndarray:
    """An object colour at least 100 levels (x ``contrast``) from the background's mean."""
    for _ in range(100):
        colour = rng.uniform(20, 235, 3).astype(np.float32)
        if np.linalg.norm(colour - background) >= 100:
            break
    return background + contrast * (colour - background)


def _paint(image, labels, shape, y0: int, x0: int, look: Appearance, label: int, background):
    """Paints ``shape`` (its box's top-left at (y0, x0), clipped to the image) with ``look``."""
    h, w = labels.shape
    sy0, sx0 = max(0, -y0), max(0, -x0)
    y0c, x0c = max(0, y0), max(0, x0)
    y1c, x1c = min(h, y0 + shape.shape[0]), min(w, x0 + shape.shape[1])
    if y1c <= y0c or x1c <= x0c:
        return
    m = shape[sy0 : sy0 + y1c - y0c, sx0 : sx0 + x1c - x0c]
    tex_rng = np.random.default_rng(look.texture_seed)
    tex = _texture(tex_rng, y1c - y0c, x1c - x0c, y0c, x0c, freq=0.12)
    obj = (tex - tex[::4, ::4].mean((0, 1))) * 0.35 + look.colour
    region = image[y0c:y1c, x0c:x1c]
    region[m] = obj[m]
    labels[y0c:y1c, x0c:x1c][m] = label


def _keep_visible(labels: np.ndarray) -> np.ndarray:
    """Drops instances whose visible area is below `MIN_AREA` of the image (their pixels stay
    painted but belong to no instance) and renumbers the rest 1..k in paint order."""
    counts = np.bincount(labels.ravel(), minlength=MAX_OBJECTS + 1)
    keep = [i for i in range(1, len(counts)) if counts[i] >= MIN_AREA * labels.size]
    lut = np.zeros(len(counts), np.uint8)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[labels]
