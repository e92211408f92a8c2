"""The decoder's detail path (`hrsam.models.detail`): added to a model it changes no output until
trained, its features survive the trip inside the embedding, it sees pixels only near them,
and training reaches it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrsam.models import build_model
from hrsam.models.detail import (
    add_context,
    add_detail,
    add_refine,
    pack,
    unpack,
    unpack_refine,
)
from hrsam.models.predictor import Predictor

PTS = torch.tensor([[[100.0, 120.0], [30.0, 200.0]]]), torch.tensor([[1, 0]])


def _trained_like(model):
    with torch.no_grad():  # no layer is zero by accident
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_pack_unpack_is_exact():
    emb, det = torch.randn(2, 64, 8, 8), torch.randn(2, 16, 32, 32)
    packed = pack(emb, det)
    assert packed.shape == (2, 64 + 16 * 16, 8, 8)
    got_emb, got_det = unpack(packed, 64)
    assert torch.equal(got_emb, emb) and torch.equal(got_det, det)


@pytest.mark.parametrize("name", ["hrsam_tiny", "hrsampp_tiny", "sam_tiny"])
def test_added_detail_path_keeps_every_output(name):
    torch.manual_seed(0)
    model = _trained_like(build_model(name, detail=0)).eval()  # the preset without its path
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        want = model(x, *PTS)
        add_detail(model, 16)
        got = model(x, *PTS)
        assert model.encode(x).shape == (1, model.preset.out_dim + 16 * 16, 16, 16)
    assert torch.equal(got, want)


def test_the_predictor_caches_the_detail_with_the_embedding():
    """set_image once, then clicks: the same logits as the whole model on the canvas."""
    torch.manual_seed(0)
    model = add_detail(_trained_like(build_model("hrsam_tiny", detail=0)), 8).eval()
    _trained_like(model.mask_decoder.detail_fuse)
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    predictor = Predictor(model, 256)
    predictor.set_image(image)
    clicks = np.array([[120.0, 100.0], [200.0, 30.0]]), np.array([1, 0])
    got, _ = predictor.predict(*clicks)
    x = model.normalize(torch.from_numpy(image).float().permute(2, 0, 1)[None])
    with torch.no_grad():
        want = model(x, *PTS)
    torch.testing.assert_close(got, want[0], rtol=1e-5, atol=1e-5)


def test_the_detail_features_see_only_nearby_pixels():
    """With the image embedding held, one changed input pixel moves the logits only within the
    detail path's reach (stem 7 px, fuse 2 cells of 4 px at T/4, then the bilinear upsampling),
    never across the canvas."""
    torch.manual_seed(0)
    model = add_detail(_trained_like(build_model("hrsam_tiny", detail=0)), 8).eval()
    _trained_like(model.mask_decoder.detail_fuse)
    x = torch.randn(1, 3, 256, 256)
    y = x.clone()
    y[..., 128, 128] += 5.0
    with torch.no_grad():
        emb = model.encode(x)
        near = unpack(model.encode(y), model.preset.out_dim)[1]
        moved = pack(unpack(emb, model.preset.out_dim)[0], near)
        a, _ = model.decode(emb, *PTS)
        b, _ = model.decode(moved, *PTS)
    changed = ((a - b).abs() > 0)[0, 0].nonzero()
    assert len(changed) > 0
    assert (changed - 32).abs().max() <= 4  # T/4 cells around pixel 128's cell 32


def test_training_reaches_the_detail_path_and_a_second_one_is_refused():
    torch.manual_seed(0)
    model = add_detail(build_model("hrsam_tiny", training=True, detail=0), 8).train()
    x = torch.randn(1, 3, 128, 128)
    model(x, *PTS).sigmoid().mean().backward()
    assert model.mask_decoder.detail_fuse.conv2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="detail path already"):
        add_detail(model, 8)
    assert build_model("hrsam_tiny").preset.detail == 16  # the tiny presets have their path
    with pytest.raises(ValueError, match="pass the image's detail features"):
        emb = torch.zeros(1, 64, 8, 8)
        pe, sparse = torch.zeros_like(emb), torch.zeros(1, 1, 64)
        model.mask_decoder(emb, pe, sparse, torch.zeros_like(emb), False)
    with pytest.raises(ValueError, match="must be >= 1"):
        add_detail(build_model("hrsam_tiny"), 0)


def test_grow_probe_trains_on_the_committed_base_with_its_detail_path(tmp_path, capsys):
    """`benchmarks.grow_probe --depth 4` at micro scale: the committed base (whose third stage
    added the detail path) keeps its blocks and trains its path on; ``--detail`` on a base that
    has one is a one-line error before any training."""
    import json

    import yaml

    from benchmarks import grow_probe
    from hrsam import pretrained
    from tests.test_pretrain import MICRO_RECIPE

    recipe = {**MICRO_RECIPE, "data": {**MICRO_RECIPE["data"], "root": str(tmp_path / "data")}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    args = ["hrsam_tiny", "--out", str(tmp_path / "out"), "--recipe", str(tmp_path / "recipe.yaml")]
    micro = ["--ts", "64", "--steps", "2", "--warmup", "1", "--depth", "4"]
    assert grow_probe.main([*args, *micro, "--detail", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --detail 8: hrsam_tiny's base has a detail path (16 channels) already; "\
        "leave --detail out to train on with it"  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert grow_probe.main([*args, *micro]) == 0
    record = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert record["depth"] == 4 and record["detail"] == 0
    refine = ["--out", str(tmp_path / "refine"), "--refine", "8"]
    assert grow_probe.main([*args[:1], *args[3:], *refine, *micro]) == 0
    assert json.loads((tmp_path / "refine" / "validation.json").read_text())["refine"] == 8
    refined = torch.load(tmp_path / "refine" / "last.pt", weights_only=True)["state_dict"]
    assert refined["mask_decoder.detail_refine.conv2.weight"].abs().sum() > 0  # trained off 0
    late = ["--out", str(tmp_path / "late"), "--context", "1", "--train", "gamma=0.9"]
    late += ["--train", "max_clicks=3", "--train", "loss=bce_dice_band"]
    assert grow_probe.main([*args[:1], *args[3:], *late, *micro]) == 0
    record = json.loads((tmp_path / "late" / "validation.json").read_text())
    assert record["context"] == 1
    assert (record["train"]["gamma"], record["train"]["max_clicks"]) == (0.9, 3)
    assert record["train"]["loss"] == "bce_dice_band"
    ctx = torch.load(tmp_path / "late" / "last.pt", weights_only=True)["state_dict"]
    assert ctx["detail_encoder.context.0.conv2.weight"].abs().sum() > 0  # trained off 0
    for bad, says in (("gama=0.9", "write KEY=VALUE with a TrainConfig key"),
                      ("loss=focal", "loss='focal' must be one of")):  # fmt: skip
        capsys.readouterr()
        out = ["--out", str(tmp_path / "bad"), "--train", bad]
        assert grow_probe.main([*args[:1], *args[3:], *out, *micro]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --train") and says in err and "\n" not in err
        assert not (tmp_path / "bad").exists()
    state = torch.load(tmp_path / "out" / "last.pt", weights_only=True)["state_dict"]
    assert len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}) == 4
    base = pretrained.load_state("hrsam_tiny")
    key = "mask_decoder.detail_fuse.conv2.weight"
    assert base[key].abs().sum() > 0  # the base's path was trained off zero
    assert state[key].shape == base[key].shape and not torch.equal(state[key], base[key])


def test_a_preset_with_detail_builds_the_path_and_checkpoints_rebuild_it(tmp_path):
    """``build_model(..., detail=N)`` is the path `add_detail` adds (the same weights from the
    same seed); a checkpoint of it loads with the path and the same logits; negative channels
    are refused."""
    from hrsam.models import load_model
    from hrsam.models.checkpoint import save_checkpoint
    from hrsam.models.presets import get_preset

    torch.manual_seed(0)
    built = build_model("hrsam_tiny", detail=8)
    torch.manual_seed(0)
    added = add_detail(build_model("hrsam_tiny", detail=0), 8)
    assert built.preset.detail == added.preset.detail == 8
    assert built.state_dict().keys() == added.state_dict().keys()
    assert all(torch.equal(v, added.state_dict()[k]) for k, v in built.state_dict().items())
    _trained_like(built.mask_decoder.detail_fuse)
    path = save_checkpoint(built.eval(), tmp_path / "detail.pt")
    loaded = load_model("hrsam_tiny", str(path)).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x, *PTS), built(x, *PTS))
    assert loaded.preset.detail == 8
    with pytest.raises(ValueError, match="detail=-1 must be >= 0"):
        get_preset("hrsam_tiny", detail=-1)


def test_pack_unpack_with_the_half_features_is_exact():
    emb, det, half = torch.randn(2, 64, 8, 8), torch.randn(2, 8, 32, 32), torch.randn(2, 8, 64, 64)
    packed = pack(emb, det, half)
    assert packed.shape == (2, 64 + 8 * 16 + 8 * 64, 8, 8)
    got = unpack_refine(packed, 64)
    assert all(torch.equal(a, b) for a, b in zip(got, (emb, det, half), strict=True))


@pytest.mark.parametrize("name", ["hrsam_tiny", "sam_tiny"])
def test_an_added_refine_path_draws_the_masks_at_t2_as_the_t4_masks_upsampled(name, tmp_path):
    """`add_refine`: the masks come at T/2, equal to the T/4 ones upsampled 2x until the path
    trains; the previous mask goes back at either size; a checkpoint rebuilds the path."""
    from hrsam.models import load_model
    from hrsam.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = _trained_like(build_model(name)).eval()  # the preset with its detail path
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        emb = model.encode(x)
        low, iou = model.decode(emb, *PTS)
        refined = add_refine(model, 8)
        emb2 = refined.encode(x)
        high, iou2 = refined.decode(emb2, *PTS)
        assert low.shape[-1] == 64 and high.shape[-1] == 128
        want = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        assert torch.equal(high, want) and torch.equal(iou, iou2)
        # the next click takes either size of previous mask: T/2 averaged down to T/4
        a, _ = refined.decode(emb2, *PTS, F.avg_pool2d(high, 2))
        b, _ = refined.decode(emb2, *PTS, high)
        assert torch.equal(a, b) and not torch.equal(a, high)
    assert refined.preset.refine == 8
    _trained_like(refined.mask_decoder.detail_refine)
    path = save_checkpoint(refined, tmp_path / "refine.pt")
    loaded = load_model(name, str(path)).eval()
    with torch.no_grad():
        got = loaded.decode(loaded.encode(x), *PTS)[0]
        assert torch.equal(got, refined.decode(refined.encode(x), *PTS)[0])
        assert not torch.equal(got, want)  # the trained path corrects the upsampled mask


def test_the_refine_path_needs_the_detail_path_and_its_features():
    from hrsam.models.grow import widen_mask_features
    from hrsam.models.presets import get_preset

    with pytest.raises(ValueError, match="add_detail first"):
        add_refine(build_model("hrsam_tiny", detail=0), 8)
    with pytest.raises(ValueError, match="refine=8 needs the detail path"):
        get_preset("hrsam_tiny", detail=0, refine=8)
    model = build_model("hrsam_tiny", refine=8, training=True)
    assert model.mask_decoder.detail_refine is not None
    with pytest.raises(ValueError, match="refine path already"):
        add_refine(model, 8)
    with pytest.raises(ValueError, match="before adding the refine path"):
        widen_mask_features(model, 32)
    x = torch.randn(1, 3, 128, 128)
    model(x, *PTS).sigmoid().mean().backward()  # training reaches the path
    assert model.mask_decoder.detail_refine.conv2.weight.grad.abs().sum() > 0
    emb = model.encode(x)
    _, det = unpack(emb[:, : model.preset.out_dim + 16 * 16], model.preset.out_dim)
    with pytest.raises(ValueError, match="pass the image's T/2 features"):
        pe, sparse = torch.zeros(1, 64, 8, 8), torch.zeros(1, 1, 64)
        model.mask_decoder(torch.zeros(1, 64, 8, 8), pe, sparse, torch.zeros_like(pe), False, det)


@pytest.mark.parametrize("name", ["hrsam_tiny", "sam_tiny"])
def test_added_context_blocks_keep_every_output_and_checkpoints_rebuild_them(name, tmp_path):
    """`add_context`: the model computes what it did until the blocks train; its preset says
    ``context`` and a checkpoint of it loads them back, with the same logits."""
    from hrsam.models import load_model
    from hrsam.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = _trained_like(build_model(name)).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        want = model(x, *PTS)
        add_context(model, 2)
        assert torch.equal(model(x, *PTS), want)
    assert model.preset.context == 2 and len(model.detail_encoder.context) == 2
    _trained_like(model.detail_encoder.context)
    path = save_checkpoint(model, tmp_path / "context.pt")
    loaded = load_model(name, str(path)).eval()
    with torch.no_grad():
        got, trained = loaded(x, *PTS), model(x, *PTS)
    assert torch.equal(got, trained) and not torch.equal(trained, want)
    assert loaded.preset.context == 2


def test_context_blocks_widen_what_the_detail_features_see():
    """One changed input pixel moves the T/4 detail features within the stem's reach (1 cell)
    without context; with two blocks (dilations 2 and 4: 4 x 2 + 4 x 4 more cells) out to 25
    cells, and no farther."""
    torch.manual_seed(0)
    model = _trained_like(build_model("hrsam_tiny")).eval()
    x = torch.randn(1, 3, 512, 512)
    y = x.clone()
    y[..., 256, 256] += 5.0

    def reach() -> int:
        with torch.no_grad():
            a, b = model.detail_encoder(x), model.detail_encoder(y)
        return int(((a - b).abs() > 0).any(1)[0].nonzero().sub(64).abs().max())

    assert reach() <= 1
    _trained_like(add_context(model, 2).detail_encoder.context)
    assert 8 < reach() <= 25


def test_context_blocks_need_the_detail_path_and_come_once():
    from hrsam.models.presets import get_preset

    with pytest.raises(ValueError, match="context=2 needs the detail path"):
        get_preset("hrsam_tiny", detail=0, context=2)
    with pytest.raises(ValueError, match="add_detail first"):
        add_context(build_model("hrsam_tiny", detail=0), 2)
    model = add_context(build_model("hrsam_tiny"), 1)
    with pytest.raises(ValueError, match="context blocks already"):
        add_context(model, 1)
    with pytest.raises(ValueError, match="must be >= 1"):
        add_context(build_model("hrsam_tiny"), 0)
