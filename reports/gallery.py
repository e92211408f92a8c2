"""The gallery: what a model's masks look like after 1, 3 and 5 clicks, for the same validation
objects in every setting (each trial keeps them: `hrsam.interactive.evaluate.GalleryItem`).

One figure per setting (the first finished run of it): a row per object, a column per click
count, the mask over the image with the ground truth's outline, the clicks so far (positive in
green, negative in red) and the IoU under each panel.
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports import frame
from reports.figures import Drawn, label_of

MAX_SETTINGS = 12  # galleries drawn per report at most (the report's time goal)
POSITIVE, NEGATIVE = "#1a9850", "#d73027"
MASK_RGB = np.array([0.13, 0.47, 0.71])


def gallery_figures(trials: pd.DataFrame, varying: list[str], galleries: dict) -> list[Drawn]:
    """A `Drawn` gallery per setting of ``varying`` whose run kept one (``galleries``: run id ->
    gallery items), in the order of the trials table."""
    ok = trials[frame.run_state(trials) == "ok"]
    out, seen = [], set()
    for _, row in ok.iterrows():
        items = galleries.get(row["run_id"])
        point = tuple(row[k] for k in varying)
        if not items or point in seen or len(out) >= MAX_SETTINGS:
            continue
        seen.add(point)
        label = label_of(varying, point) if varying else str(row.get("label", "default"))
        slug = re.sub(r"[^\w.=-]+", "_", label).strip("_") or "default"
        caption = (
            f"Gallery, {label}: masks after {', '.join(map(str, _clicks(items)))} clicks on the "
            f"first {len(items)} validation objects (the same objects in every setting); mask in "
            "blue with a yellow outline, ground-truth outline in black, positive clicks green, "
            "negative red, IoU below"
        )
        out.append(Drawn(f"gallery_{slug}", caption, draw(items, label)))
    return out


def _clicks(items) -> list[int]:
    return sorted({k for it in items for k in it.masks})


def draw(items, title: str):
    """The figure of one setting's gallery items."""
    ks = _clicks(items)
    fig, axes = plt.subplots(
        len(items), len(ks), figsize=(2.3 * len(ks), 2.3 * len(items)), squeeze=False
    )
    for r, it in enumerate(items):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            _panel(ax, it, k)
            if r == 0:
                ax.set_title(f"{k} click{'s' if k > 1 else ''}", fontsize=9)
            if c == 0:
                ax.set_ylabel(it.name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _panel(ax, it, k: int) -> None:
    image = it.image.astype(np.float64) / 255.0
    mask = it.masks.get(k)
    if mask is not None:
        image = np.where(mask[..., None], 0.45 * image + 0.55 * MASK_RGB, image)
    ax.imshow(image, interpolation="nearest")
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="#ffd400", linewidths=1.0)
    ax.contour(it.gt.astype(float), levels=[0.5], colors="black", linewidths=0.7)
    for y, x, positive in it.clicks[:k]:
        ax.plot(x, y, "o", ms=5, mec="white", mew=0.8, color=POSITIVE if positive else NEGATIVE)
    iou = it.ious.get(k)
    ax.set_xlabel("no mask" if iou is None else f"IoU {iou:.3f}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
