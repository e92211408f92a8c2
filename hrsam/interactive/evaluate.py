"""Interactive evaluation: every object gets all ``max_clicks`` clicks; everything else is derived
from the resulting N x max_clicks IoU matrix (eval-protocol B, C.2(b), HRSAM spec C).

Per object: encode the image once at ``ts``; then per click: simulate the next click at the GT
resolution (the protocol's rule), predict with all clicks so far and the previous low-resolution
logits, threshold at the original resolution (``hrsam``: logit > 0; ``ritm``: probability > 0.49),
record IoU. Timings: encoder ms per image and decoder ms per click (wall clock, synchronized on
CUDA); peak memory of the whole run.

Two more things are recorded per object, outside the timings: the oracle-mask test (the first
click again, with the ideal ground-truth low-resolution mask as the previous mask: does the
model use a mask it is given?) and the object's native long side, so that an evaluation at a
``ts`` above it is marked as upsampled (`EvalResult.upsampled`).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hrsam import names
from hrsam.interactive.clicker import Click, check_protocol, next_click
from hrsam.interactive.metrics import boundary_iou, click_use, iou, summarize
from hrsam.models.predictor import Predictor
from hrsam.precision import autocast, check_precision

log = logging.getLogger(__name__)

# RITM thresholds probabilities at 0.49: logit(0.49)
_RITM_LOGIT = math.log(0.49 / 0.51)


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation settings: the defaults of ``python -m hrsam.evaluate`` and of a sweep's
    ``eval.*`` keys (eval-protocol A, B)."""

    protocol: str = "hrsam"
    ts: int = 1024
    max_clicks: int = 20

    def __post_init__(self) -> None:
        check_protocol(self.protocol)
        if self.ts < 16 or self.ts % 16:
            raise ValueError(f"ts={self.ts} must be a positive multiple of 16")
        if self.max_clicks < 1:
            raise ValueError(f"max_clicks={self.max_clicks} must be >= 1")


@dataclass(frozen=True)
class Sample:
    """One object: an (H, W, 3) uint8 RGB image, its (H, W) bool mask and optional ignore map."""

    name: str
    image: np.ndarray
    gt: np.ndarray
    ignore: np.ndarray | None = None


GALLERY_CLICKS = (1, 3, 5)  # the masks a gallery shows, after k clicks
GALLERY_SIDE = 256  # px: the long side of a gallery's thumbnails
GALLERY = "gallery.npz"  # a trial's gallery file (an artifact of its run)


@dataclass
class GalleryItem:
    """One object as the gallery shows it: thumbnails of the image, the ground truth and the
    mask after each of `GALLERY_CLICKS` clicks, the clicks in thumbnail pixels, and the IoUs."""

    name: str
    image: np.ndarray  # (h, w, 3) uint8
    gt: np.ndarray  # (h, w) bool
    masks: dict[int, np.ndarray]  # k -> (h, w) bool
    clicks: list[tuple[float, float, bool]]  # (y, x, positive) in thumbnail pixels
    ious: dict[int, float]  # k -> IoU at full resolution


def _thumb(a: np.ndarray) -> np.ndarray:
    step = max(1, -(-max(a.shape[:2]) // GALLERY_SIDE))
    return np.ascontiguousarray(a[::step, ::step])


def gallery_item(sample, masks: dict[int, np.ndarray], clicks, ious: dict[int, float]):
    step = max(1, -(-max(sample.gt.shape) // GALLERY_SIDE))
    return GalleryItem(
        sample.name,
        _thumb(sample.image),
        _thumb(np.asarray(sample.gt, bool)),
        {k: _thumb(m) for k, m in masks.items()},
        [(c.y / step, c.x / step, c.positive) for c in clicks],
        ious,
    )


def write_gallery(items: list[GalleryItem], path: str | Path) -> None:
    """The gallery as one compressed ``.npz`` (a few hundred kB for four objects)."""
    arrays = {}
    for i, it in enumerate(items):
        arrays[f"{i}/image"], arrays[f"{i}/gt"] = it.image, it.gt
        for k, m in it.masks.items():
            arrays[f"{i}/mask{k}"] = m
        arrays[f"{i}/clicks"] = np.array(it.clicks, np.float64).reshape(-1, 3)
        arrays[f"{i}/ious"] = np.array([[k, v] for k, v in it.ious.items()], np.float64)
        arrays[f"{i}/name"] = np.array(it.name)
    np.savez_compressed(path, **arrays)


def read_gallery(path: str | Path) -> list[GalleryItem]:
    """`write_gallery`'s items back; an empty list when the file is missing."""
    path = Path(path)
    if not path.exists():
        return []
    with np.load(path) as z:
        n = len({k.split("/")[0] for k in z.files})
        items = []
        for i in range(n):
            masks = {int(k.split("mask")[1]): z[k] for k in z.files if k.startswith(f"{i}/mask")}
            clicks = [(y, x, bool(p)) for y, x, p in z[f"{i}/clicks"]]
            ious = {int(k): float(v) for k, v in z[f"{i}/ious"]}
            items.append(
                GalleryItem(str(z[f"{i}/name"]), z[f"{i}/image"], z[f"{i}/gt"], masks, clicks, ious)
            )
    return items


@dataclass
class EvalResult:
    protocol: str
    ts: int
    max_clicks: int
    names: list[str] = field(default_factory=list)
    ious: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    clicks: list[list[Click]] = field(default_factory=list)
    biou: list[float] = field(default_factory=list)  # boundary IoU after 5 clicks (or the last)
    oracle: list[float] = field(default_factory=list)  # IoU: first click + the ideal mask
    native: list[int] = field(default_factory=list)  # each object's image long side, px
    encoder_ms: list[float] = field(default_factory=list)
    decoder_ms: list[float] = field(default_factory=list)
    gallery: list[GalleryItem] = field(default_factory=list)  # the first objects, if asked
    peak_mem_mb: float | None = None

    @property
    def upsampled(self) -> int:
        """Objects evaluated at a ``ts`` above their image's native long side (upsampled)."""
        return sum(self.ts > n for n in self.native)

    def summary(self) -> dict[str, float]:
        out = summarize(self.ious, self.max_clicks)
        labels = [[c.positive for c in clicks] for clicks in self.clicks]
        out.update(click_use(self.ious, labels, np.array(self.oracle) if self.oracle else None))
        if self.native:
            out[names.UPSAMPLED] = self.upsampled / len(self.native)
        nan = float("nan")
        out[names.BIOU] = float(np.mean(self.biou)) if self.biou else nan
        out[names.ENCODER_MS] = float(np.median(self.encoder_ms)) if self.encoder_ms else nan
        out[names.DECODER_MS] = float(np.median(self.decoder_ms)) if self.decoder_ms else nan
        # seconds per click: encoder once per object plus every decoder step
        total = sum(self.encoder_ms) + sum(self.decoder_ms)
        n_clicks = max(1, len(self.names) * self.max_clicks)
        out[names.SPC_S] = total / 1e3 / n_clicks
        if self.peak_mem_mb is not None:
            out[names.PEAK_MEM_MB] = self.peak_mem_mb
        return out

    def write_csv(self, folder: str | Path) -> None:
        """``ious.csv`` (the N x max_clicks IoU matrix, one row per object, exact float64 so that
        a metric recomputed from it equals the logged one), ``clicks.csv`` and, when kept,
        the gallery (`GALLERY`)."""
        folder = Path(folder)
        if self.gallery:
            folder.mkdir(parents=True, exist_ok=True)
            write_gallery(self.gallery, folder / GALLERY)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "ious.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", *(f"click{k}" for k in range(1, self.max_clicks + 1))])
            for name, row in zip(self.names, self.ious, strict=True):
                w.writerow([name, *(f"{v:.17g}" for v in row)])
        with open(folder / "clicks.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "index", "y", "x", "positive"])
            for name, clicks in zip(self.names, self.clicks, strict=True):
                for i, c in enumerate(clicks, 1):
                    w.writerow([name, i, c.y, c.x, int(c.positive)])


def read_ious(path: str | Path) -> tuple[list[str], np.ndarray] | None:
    """(object names, IoU matrix) of an ``ious.csv`` (`EvalResult.write_csv`: a header, then a
    name and max_clicks exact floats per object); None when the file is missing or holds no
    object."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    if not rows:
        return None
    return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows], np.float64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model,
    dataset: Sequence[Sample],
    protocol: str = "hrsam",
    ts: int = 1024,
    max_clicks: int = 20,
    seed: int = 42,
    progress: Callable[[int, int, str], None] | None = None,
    precision: str = "fp32",
    gallery: int = 0,
) -> EvalResult:
    """Runs the click loop on every sample; returns the IoU matrix, clicks and timings.

    ``precision`` (fp32, bf16, fp16) runs encoder and decoder under autocast; logits are
    thresholded in float32. ``gallery``: keep thumbnails of the first that many objects and
    their masks after `GALLERY_CLICKS` clicks (`EvalResult.gallery`)."""
    check_protocol(protocol)
    check_precision(precision)
    if max_clicks < 1:
        raise ValueError(f"max_clicks={max_clicks} must be >= 1")
    predictor = Predictor(model, ts)
    device = predictor.device
    rng = np.random.default_rng(seed)
    result = EvalResult(protocol, ts, max_clicks)
    rows = []
    thr = _RITM_LOGIT if protocol == "ritm" else 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i, sample in enumerate(dataset):
        gt = np.asarray(sample.gt, bool)
        ignore = sample.ignore if protocol == "ritm" else None  # hrsam: ignore is background
        start = time.perf_counter()
        with autocast(device, precision):
            predictor.set_image(sample.image)
        _sync(device)
        result.encoder_ms.append((time.perf_counter() - start) * 1e3)
        keep = GALLERY_CLICKS if i < gallery else ()
        curve, clicks, kept = click_loop(predictor, gt, ignore, rng, result, precision, keep)
        result.oracle.append(_oracle(predictor, gt, ignore, clicks, thr, precision, curve[0]))
        result.native.append(max(gt.shape))
        if i < gallery:
            ious_at = {k: curve[k - 1] for k in kept}
            shown = clicks[: max(GALLERY_CLICKS)]
            result.gallery.append(gallery_item(sample, kept, shown, ious_at))
        rows.append(curve)
        result.names.append(sample.name)
        result.clicks.append(clicks)
        if progress is not None:
            progress(i + 1, len(dataset), sample.name)
    result.ious = np.array(rows, dtype=np.float64).reshape(len(rows), max_clicks)
    if device.type == "cuda":
        result.peak_mem_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def click_loop(predictor, gt, ignore, rng, result: EvalResult, precision: str, keep=()):
    """One object's clicks 1..max_clicks: the next click where the prediction is wrong, then
    a prediction from all clicks so far and the previous step's logits. Appends the decoder
    times and the BIoU after click 5 (or the last) to ``result``; returns (IoU per click, the
    clicks, the masks after the clicks in ``keep``)."""
    device = predictor.device
    thr = _RITM_LOGIT if result.protocol == "ritm" else 0.0
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    clicks: list[Click] = []
    prev = None
    curve = []
    kept: dict[int, np.ndarray] = {}
    biou_at = min(5, result.max_clicks)
    for k in range(1, result.max_clicks + 1):
        click = next_click(gt, pred, clicked, result.protocol, ignore=ignore, rng=rng)
        if click is not None:
            clicks.append(click)
            clicked[click.y, click.x] = True
        if clicks:
            pts = np.array([[c.y, c.x] for c in clicks])
            labels = np.array([int(c.positive) for c in clicks])
            start = time.perf_counter()
            with autocast(device, precision):
                logits, prev = predictor.predict(pts, labels, prev)
            _sync(device)
            result.decoder_ms.append((time.perf_counter() - start) * 1e3)
            pred = logits[0].float().cpu().numpy() > thr
        curve.append(iou(pred, gt, ignore))
        if k in keep:
            kept[k] = pred.copy()
        if k == biou_at:
            result.biou.append(boundary_iou(pred, gt))
    return curve, clicks, kept


def _oracle(predictor, gt, ignore, clicks, thr: float, precision: str, first_iou: float) -> float:
    """The oracle-mask test: click 1 again, with the ideal mask as the previous mask (the first
    click's IoU when the clicker made no click)."""
    if not clicks:
        return first_iou
    with autocast(predictor.device, precision):
        first = predictor.predict(
            np.array([[clicks[0].y, clicks[0].x]]),
            np.array([int(clicks[0].positive)]),
            predictor.ideal_logits(gt),
        )[0]
    return iou(first[0].float().cpu().numpy() > thr, gt, ignore)
