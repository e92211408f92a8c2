"""Growing a model deeper (`hrsam.models.grow`): the grown model computes the old one's outputs
exactly, the old blocks keep their scans, taps and global attention at their new indexes, and
the new blocks' weights are the only new ones."""

from __future__ import annotations

import pytest
import torch

from hrsam.models import build_model
from hrsam.models.grow import block_map, grow, grow_preset


@pytest.mark.parametrize(
    ("name", "ssm", "out", "globals_"),
    [
        ("hrsam_tiny", (1, 5), (1, 5), ()),
        ("hrsampp_tiny", (1, 5), (1, 5), ()),
        ("sam_tiny", (), (), (1, 3, 5)),  # new block 3 takes old block 1's global attention
    ],
)
def test_grown_tiny_presets_compute_the_old_model(name, ssm, out, globals_):
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():  # trained-like weights: no block is the identity by accident
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    grown = grow(model, 6).eval()
    p = grown.preset
    assert (p.depth, p.ssm_indexes, p.out_indexes, p.global_attn_indexes) == (6, ssm, out, globals_)
    assert block_map(model.preset, 6) == {0: 0, 1: 1, 2: 4, 3: 5}
    x = torch.randn(1, 3, 256, 256)
    pts = torch.tensor([[[100.0, 120.0], [30.0, 200.0]]]), torch.tensor([[1, 0]])
    with torch.no_grad():
        want = model(x, *pts)
        got = grown(x, *pts)
    assert torch.equal(got, want)
    old = {k for k in model.state_dict()}
    new = {k for k in grown.state_dict()} - {
        k.replace("blocks.2.", "blocks.4.").replace("blocks.3.", "blocks.5.") for k in old
    }
    assert new and all(
        k.startswith(("image_encoder.blocks.2.", "image_encoder.blocks.3.")) for k in new
    )
    # the new blocks are not dead: one gradient step on them changes the output
    grown.train()
    loss = grown(x, *pts).sigmoid().mean()
    loss.backward()
    grads = [q.grad for k, q in grown.named_parameters() if k.startswith("image_encoder.blocks.2.")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    ("depth", "message"), [(5, "even number"), (4, "positive"), (10, "at most 4")]
)
def test_bad_growth_is_refused(depth, message):
    with pytest.raises(ValueError, match=message):
        grow_preset(build_model("hrsam_tiny").preset, depth)


def test_grow_probe_trains_the_grown_base_and_validates(tmp_path):
    """`benchmarks.grow_probe` at micro scale: the committed base grown to 6 blocks, 2 steps at
    ts 64 on 3 scenes, validated; its training state holds the 6-block model."""
    import json

    import yaml

    from benchmarks import grow_probe
    from tests.test_pretrain import MICRO_RECIPE

    recipe = {**MICRO_RECIPE, "data": {**MICRO_RECIPE["data"], "root": str(tmp_path / "data")}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    args = ["hrsam_tiny", "--out", str(tmp_path / "out"), "--recipe", str(tmp_path / "recipe.yaml")]
    assert grow_probe.main([*args, "--ts", "64", "--steps", "2", "--warmup", "1"]) == 0
    record = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert record["depth"] == 6 and record["train"]["steps"] == 2
    assert record["validation"]["64"]["objects"] > 0
    state = torch.load(tmp_path / "out" / "last.pt", weights_only=True)["state_dict"]
    blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
    assert len(blocks) == 6 and int(torch.load(tmp_path / "out" / "last.pt")["step"]) == 2


def test_widened_mask_features_keep_the_logits_and_learn():
    """8 -> 32 per-pixel mask features: the same logits (the detail path's fuse, trained off zero
    here, widens with them: to float rounding, its convolution sums over more inputs, zeros); the
    new hypernetwork rows get gradients (their features are not zero), so training can use
    them."""
    from hrsam.models.grow import widen_mask_features

    torch.manual_seed(0)
    model = build_model("hrsam_tiny").eval()
    torch.nn.init.normal_(model.mask_decoder.detail_fuse.conv2.weight, std=0.1)  # as if trained
    x = torch.randn(1, 3, 256, 256)
    pts = torch.tensor([[[100.0, 120.0], [30.0, 200.0]]]), torch.tensor([[1, 0]])
    with torch.no_grad():
        want = model(x, *pts)
    widen_mask_features(model, 32)
    with torch.no_grad():
        got = model(x, *pts)
    assert model.mask_decoder.output_upscaling[3].out_channels == 32
    assert model.mask_decoder.detail_fuse.conv1.in_channels == 32 + 16
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    model.train()
    model(x, *pts).sigmoid().mean().backward()
    last = model.mask_decoder.output_hypernetworks_mlps[0].layers[-1]
    assert last.weight.grad[8:].abs().sum() > 0
    with pytest.raises(ValueError, match="must be more than the 32"):
        widen_mask_features(model, 16)
