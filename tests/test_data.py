"""Loaders on small folders written in each real layout; the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hrsam.data import DataConfig, DatasetError, build_dataset
from hrsam.data.synthetic import generate, make_sample
from hrsam.interactive.metrics import iou
from hrsam.registry import UnknownNameError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_davis_ritm_layout(tmp_path):
    mask = np.zeros((20, 30, 3), np.uint8)
    mask[5:10, 5:10, 2] = 255  # colour mask: max over channels > 0
    _write(tmp_path / "img" / "bear.jpg", _image())
    _write(tmp_path / "gt" / "bear.png", mask)
    _write(tmp_path / "img" / "nomask.jpg", _image())  # images without a mask are skipped
    ds = build_dataset("davis", tmp_path)
    assert len(ds) == 1
    s = ds[0]
    assert (
        s.name == "bear" and s.gt.sum() == 25 and s.ignore is None and s.image.shape == (20, 30, 3)
    )


def test_davis_focuscut_layout_keeps_only_id_1(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 1
    mask[0:2, 0:2] = 255  # void in FocusCut files: background under HRSAM's rule
    _write(tmp_path / "img" / "bear.jpg", _image())
    _write(tmp_path / "gt" / "bear#001.png", mask)
    s = build_dataset("davis", tmp_path)[0]
    assert s.name == "bear" and s.gt.sum() == 25


def test_hqseg44k_pools_subsets_and_binarizes_above_zero(tmp_path):
    for sub, (img_dir, gt_dir) in {
        "COIFT": ("thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
        "DIS-VD": ("DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    }.items():
        m = np.zeros((20, 30), np.uint8)
        m[3:6, 3:6] = 1  # anti-aliased low values still count (> 0)
        _write(tmp_path / img_dir / f"{sub}_a.jpg", _image())
        _write(tmp_path / gt_dir / f"{sub}_a.png", m)
    pooled = build_dataset("hqseg44k", tmp_path)
    assert len(pooled) == 2 and {s.name for s in pooled} == {"DIS-VD/DIS-VD_a", "COIFT/COIFT_a"}
    assert all(s.gt.sum() == 9 for s in pooled)
    assert len(build_dataset("hqseg44k", tmp_path, subset="COIFT")) == 1
    with pytest.raises(DatasetError, match="unknown hqseg44k subset 'coift'; valid: DIS-VD"):
        build_dataset("hqseg44k", tmp_path, subset="coift")


def test_grabcut_and_berkeley_ignore_band(tmp_path):
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 5:15] = 128
    m[7:13, 7:13] = 255
    _write(tmp_path / "g" / "data_GT" / "x.jpg", _image())
    _write(tmp_path / "g" / "boundary_GT" / "x.bmp", m)
    _write(tmp_path / "b" / "images" / "y.jpg", _image())
    _write(tmp_path / "b" / "masks" / "y.png", m)
    for name, sub in (("grabcut", "g"), ("berkeley", "b")):
        s = build_dataset(name, tmp_path / sub)[0]
        assert s.gt.sum() == 36 and s.ignore.sum() == 100 - 36


def test_corrupt_or_missing_files_and_wrong_roots(tmp_path):
    _write(tmp_path / "img" / "bear.jpg", _image())
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "bear.png").write_bytes(b"not a png")
    ds = build_dataset("davis", tmp_path)
    with pytest.raises(DatasetError, match=r"cannot read mask .*gt/bear\.png"):
        ds[0]
    (tmp_path / "img" / "bear.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match=r"cannot read image .*img/bear\.jpg"):
        ds[0]
    with pytest.raises(DatasetError, match=r"does not exist; expected layout: img/<name>\.jpg"):
        build_dataset("davis", tmp_path / "nowhere")
    (tmp_path / "empty" / "img").mkdir(parents=True)
    (tmp_path / "empty" / "gt").mkdir()
    with pytest.raises(DatasetError, match="holds no image/mask pairs; expected layout"):
        build_dataset("davis", tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"has no data_GT/ folder; expected layout"):
        build_dataset("grabcut", tmp_path)
    with pytest.raises(
        UnknownNameError, match="unknown dataset 'davis345'; valid: berkeley, davis"
    ):
        build_dataset("davis345", tmp_path)


def test_synthetic_is_deterministic_and_resolution_matters(tmp_path):
    a = generate(tmp_path / "a", n_train=2, n_val=1, size=512, seed=3, version=2)
    b = generate(tmp_path / "b", n_train=2, n_val=1, size=512, seed=3, version=2)
    for split, name in (("train", "00000"), ("val", "00002")):
        for suffix in (".png", "_mask.png"):
            assert (a / split / f"{name}{suffix}").read_bytes() == (
                b / split / f"{name}{suffix}"
            ).read_bytes()
    # the val split does not move when the training split grows
    c = generate(tmp_path / "c", n_train=5, n_val=1, size=512, seed=3, version=2)
    assert (c / "val" / "00005_mask.png").read_bytes() == (
        a / "val" / "00002_mask.png"
    ).read_bytes()
    assert (c / "train" / "00002_mask.png").read_bytes() != (
        a / "val" / "00002_mask.png"
    ).read_bytes()
    # a 4x down-scaled copy of the mask cannot represent the thin branches and holes
    _, mask = make_sample(5, 1024)
    t = torch.from_numpy(mask).float()[None, None]
    small = torch.nn.functional.interpolate(t, scale_factor=0.25, mode="area")
    back = torch.nn.functional.interpolate(small, size=mask.shape, mode="bilinear") > 0.5
    loss = 1 - iou(back[0, 0].numpy(), mask)
    assert loss > 0.01, loss


def test_synthetic_reuses_a_complete_folder_and_reports_progress(tmp_path):
    calls = []
    ds = build_dataset(
        "synthetic",
        tmp_path,
        split="val",
        n_train=1,
        n_val=2,
        size=128,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]  # progress per scene
    assert len({s.name.split("_")[0] for s in ds}) == 2 and len(ds) >= 2  # instances of 2 scenes
    assert ds[0].gt.any() and ds[0].image.shape[2] == 3
    calls.clear()
    build_dataset(
        "synthetic",
        tmp_path,
        split="train",
        n_train=1,
        n_val=2,
        size=128,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert calls == []  # the manifest says it is complete: nothing regenerated


def test_two_specs_under_one_root_keep_their_own_folders(tmp_path):
    """hrsam.evaluate (1024 px) and a sweep (512 px) pointed at one data.root used to regenerate
    each other's data; each generator spec now owns a folder."""
    small = generate(tmp_path, n_train=1, n_val=1, size=64)
    large = generate(tmp_path, n_train=1, n_val=1, size=128)
    assert small != large and small.parent == large.parent == tmp_path
    stamp = (small / "manifest.json").stat().st_mtime_ns
    assert generate(tmp_path, n_train=1, n_val=1, size=64) == small
    assert (small / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    val = DataConfig(root=str(tmp_path), size=128, n_train=1, n_val=1).build("val")
    assert len({s.name.split("_")[0] for s in val}) == 1 and max(val[0].image.shape[:2]) == 128


def test_stroke_coarsens_the_same_objects_in_their_own_folder(tmp_path):
    _, fine = make_sample(7, 256)
    _, coarse = make_sample(7, 256, stroke=3)
    assert fine.shape == coarse.shape  # the same draws: same canvas, same object
    assert coarse.sum() > fine.sum() * 1.05  # wider branches, bigger holes, smoother outline
    inter = (fine & coarse).sum() / fine.sum()
    assert inter > 0.8  # the fine object's body is still there
    assert np.array_equal(make_sample(7, 256, stroke=3)[1], coarse)  # deterministic
    default = generate(tmp_path, n_train=1, n_val=1, size=64, version=2)
    wide = generate(tmp_path, n_train=1, n_val=1, size=64, stroke=3, version=2)
    assert wide.name == default.name + "_stroke3" and default.name.endswith("_s0")
    val = DataConfig(root=str(tmp_path), size=64, n_train=1, n_val=1, stroke=3, version=2)
    val = val.build("val")
    assert (
        val[0].gt.sum()
        == np.asarray(Image.open(wide / "val" / "00001_mask.png")).astype(bool).sum()
    )
    with pytest.raises(ValueError, match=r"stroke=0\.1 must be in"):
        generate(tmp_path, n_train=1, n_val=1, size=64, stroke=0.1)


def test_contrast_moves_the_object_colour_away_from_the_background(tmp_path):
    base, mask = make_sample(11, 128)
    strong, same_mask = make_sample(11, 128, contrast=2)
    assert np.array_equal(mask, same_mask)  # the same object
    assert np.array_equal(base[~mask], strong[~mask])  # the same background
    gap = lambda img: np.abs(img[mask].astype(float).mean(0) - img[~mask].mean(0)).sum()  # noqa: E731
    assert gap(strong) > 1.7 * gap(base)
    folder = generate(tmp_path, n_train=1, n_val=1, size=64, stroke=2, contrast=2, version=2)
    assert folder.name.endswith("_s0_stroke2_contrast2")
    with pytest.raises(ValueError, match=r"contrast=-1 must be in"):
        generate(tmp_path, n_train=1, n_val=1, size=64, contrast=-1)


# -- version 3: multi-object scenes (issue #30) ----------------------------------------------------


def test_scenes_are_deterministic_with_disjoint_non_empty_instances(tmp_path):
    from hrsam.data.scenes import MIN_AREA, SceneSpec, make_scene

    spec = SceneSpec(size=256)
    for seed in range(8):
        image, labels = make_scene(seed, spec)
        again, same = make_scene(seed, spec)
        assert np.array_equal(image, again) and np.array_equal(labels, same)
        assert max(image.shape[:2]) == 256 and labels.shape == image.shape[:2]
        ids = [int(v) for v in np.unique(labels) if v]
        assert ids == list(range(1, len(ids) + 1))  # numbered without gaps
        for k in ids:  # one label per pixel: disjoint by construction; each big enough
            assert (labels == k).sum() >= MIN_AREA * labels.size
    # the files: the same bytes twice, one sample per instance, masks equal to the label image
    a = generate(tmp_path / "a", n_train=2, n_val=2, size=128)
    b = generate(tmp_path / "b", n_train=2, n_val=2, size=128)
    assert a.name == "v3_128px_2+2_s0"
    for p in sorted(a.rglob("*.png")):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()
    val = DataConfig(root=str(tmp_path / "a"), size=128, n_train=2, n_val=2).build("val")
    labels = np.asarray(Image.open(a / "val" / "00002_labels.png"))
    mine = [s for s in val if s.name.startswith("00002_")]
    assert len(mine) == len(np.unique(labels)) - 1 >= 1
    total = np.zeros(labels.shape, int)
    for s in mine:
        assert s.gt.any() and np.array_equal(s.gt, labels == int(s.name.split("_")[1]))
        total += s.gt
    assert total.max() == 1  # instances never overlap


def test_scenes_hold_look_alike_neighbours_and_detail_only_high_resolution_keeps():
    """A scene's point: some object touches another of the same colour (a first click cannot
    tell them apart), and downscaling 4x loses a share of the objects' pixels."""
    from hrsam.data.scenes import SceneSpec, make_scene

    touching_twins, lost = 0, []
    for seed in range(12):
        image, labels = make_scene(seed, SceneSpec(size=1024))
        ids = [int(v) for v in np.unique(labels) if v]
        colour = {k: image[labels == k].astype(float).mean(0) for k in ids}
        for a in ids:
            grown = (
                torch.nn.functional.max_pool2d(
                    torch.from_numpy((labels == a).astype(np.float32))[None, None], 3, 1, 1
                )[0, 0].numpy()
                > 0
            )
            for b in ids:
                near = b != a and (grown & (labels == b)).any()
                if near and np.abs(colour[a] - colour[b]).sum() < 30:
                    touching_twins += 1
            m = torch.from_numpy((labels == a).astype(np.float32))[None, None]
            small = torch.nn.functional.interpolate(m, scale_factor=0.25, mode="area")
            back = torch.nn.functional.interpolate(small, size=m.shape[-2:], mode="bilinear")
            lost.append(1 - iou(back[0, 0].numpy() > 0.5, labels == a))
    assert touching_twins >= 6, touching_twins
    assert np.mean(lost) > 0.02, np.mean(lost)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objects": "0"}, r"objects=0 must be N or MIN-MAX .* 1 <= MIN <= MAX <= 12"),
        ({"objects": "5-2"}, r"objects=5-2 must be N or MIN-MAX"),
        ({"objects": "many"}, r"objects='many' must be N or MIN-MAX"),
        ({"size": 64, "stroke": 8}, r"size=64 px is below the largest structure .* >= 200 px"),
        ({"version": 4}, r"version=4 must be one of 2, 3"),
    ],
)
def test_impossible_scene_specs_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        DataConfig(root=str(tmp_path), **kwargs)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing written
