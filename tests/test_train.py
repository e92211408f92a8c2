"""Training: loss, layer-wise LR decay, one step lowers the loss, exact resume, distillation,
CLI validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrsam.interactive import Sample
from hrsam.models import build_model, load_checkpoint
from hrsam.train import TrainConfig, lr_scale, normalized_focal_loss, param_groups, train
from hrsam.train.optim import warmup_poly


def test_normalized_focal_loss_hand_check():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    p = torch.sigmoid(logits)
    pt = 1 - (p - target).abs()
    beta = (1 - pt) ** 2
    s = 4 / beta.sum()
    expected = (-0.5 * s * beta * torch.log(pt)).sum() / 4
    assert normalized_focal_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    valid = torch.tensor([[[[True, True], [False, True]]]])
    assert normalized_focal_loss(logits, target, valid) != normalized_focal_loss(logits, target)


def test_bce_dice_loss_hand_check():
    from hrsam.train.losses import bce_dice_loss

    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    p = torch.sigmoid(logits)
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert bce_dice_loss(logits, target).item() == pytest.approx((bce + dice).item(), rel=1e-5)
    valid = torch.tensor([[[[True, True], [False, True]]]])
    v = valid.float()
    bce_v = (-(target * torch.log(p) + (1 - target) * torch.log(1 - p)) * v).sum() / 3
    dice_v = 1 - (2 * (p * target * v).sum() + 1) / ((p * v).sum() + (target * v).sum() + 1)
    got = bce_dice_loss(logits, target, valid).item()
    assert got == pytest.approx((bce_v + dice_v).item(), rel=1e-5)
    two = torch.cat([logits, -logits]), torch.cat([target, target])
    per = [bce_dice_loss(logits, target), bce_dice_loss(-logits, target)]
    assert bce_dice_loss(*two).item() == pytest.approx(sum(per).item() / 2, rel=1e-5)


def test_the_outline_band_loss_is_bce_dice_with_the_band_weighted_as_a_slow_reference():
    """`outline_band` against a pixel loop (a pixel is in the band where its window holds both
    labels); `bce_dice_band_loss` against the explicit per-pixel weighted sum; weight 0 is
    `bce_dice_loss`."""
    import torch.nn.functional as F

    from hrsam.train.losses import bce_dice_band_loss, bce_dice_loss, outline_band

    g = torch.Generator().manual_seed(0)
    target = torch.zeros(2, 1, 12, 12)
    target[0, 0, 2:7, 3:9], target[1, 0, 6:, :5], target[1, 0, 2, 9] = 1, 1, 1
    logits = torch.randn(2, 1, 12, 12, generator=g)
    r = 2
    band = outline_band(target, r)
    slow = torch.zeros_like(target)
    for b in range(2):
        for i in range(12):
            for j in range(12):
                win = target[b, 0, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
                slow[b, 0, i, j] = float(win.min() != win.max())
    assert torch.equal(band, slow) and 0 < band.sum() < band.numel()
    w = 1 + 3.0 * slow
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).mean((1, 2, 3))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum((1, 2, 3)) + 1) / (
        p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1
    )
    got = bce_dice_band_loss(logits, target, radius=r, weight=3.0)
    assert got.item() == pytest.approx((bce + dice).mean().item(), rel=1e-5)
    assert got > bce_dice_loss(logits, target)
    plain = bce_dice_band_loss(logits, target, weight=0.0)
    assert plain.item() == pytest.approx(bce_dice_loss(logits, target).item(), rel=1e-6)
    assert TrainConfig(loss="bce_dice_band").loss == "bce_dice_band"


def test_layer_decay_scales_follow_spec():
    assert lr_scale("image_encoder.blocks.0.attn.qkv.weight", 12, 0.9) == pytest.approx(0.9**12)
    assert lr_scale("image_encoder.blocks.11.mlp.fc1.weight", 12, 0.9) == pytest.approx(0.9)
    for exempt in (
        "image_encoder.mamba_blocks.0.in_proj.0.weight",
        "image_encoder.pos_embed",
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.lateral_convs.0.0.weight",
        "mask_decoder.iou_token.weight",
    ):
        assert lr_scale(exempt, 12, 0.9) == 1.0
    with torch.device("meta"):
        model = build_model("hrsam_vit_b")
    groups = param_groups(model, 1e-4, 0.05, layer_decay=0.9)
    scales = sorted({round(g["lr_scale"], 6) for g in groups})
    assert scales[0] == pytest.approx(0.9**12, rel=1e-5) and scales[-1] == 1.0
    no_decay = [g for g in groups if g["weight_decay"] == 0]
    assert all(p.ndim == 1 for g in no_decay for p in g["params"])
    flat = param_groups(model, 1e-4, 0.05)  # finetuning: one uniform group
    assert len(flat) == 1 and flat[0]["weight_decay"] == 0.05


def test_warmup_poly_schedule():
    f = warmup_poly(10, 110)
    assert f(0) == pytest.approx(1e-6) and f(10) == 1.0 and f(60) == pytest.approx(0.5)
    assert f(110) == 0.0


def _dataset(n=3, size=96):
    out = []
    for i in range(n):
        yy, xx = np.mgrid[:size, :size]
        gt = (yy - 40 - 3 * i) ** 2 + (xx - 50) ** 2 < (20 + 2 * i) ** 2
        rng = np.random.default_rng(i)
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        img[gt] += 150
        out.append(Sample(f"s{i}", img, gt))
    return out


@pytest.mark.parametrize(("shape", "ts"), [((96, 70), 96), ((192, 128), 96), ((128, 256), 64)])
def test_training_input_is_what_evaluation_encodes(shape, ts):
    """The training canvas (resize, normalize, pad) equals the tensor `Predictor.set_image` feeds
    the encoder for the same image: the pad is the normalized zero (mean colour), not black."""
    from hrsam.models import Predictor
    from hrsam.train.loop import prepare

    model = build_model("hrsam_tiny")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    seen = []
    encode = model.encode
    model.encode = lambda x: seen.append(x) or encode(x)
    Predictor(model, ts).set_image(image)
    train_input, gt = prepare(image, np.ones(shape, bool), ts, False, model.normalize)
    assert seen[0].shape == train_input.shape == (1, 3, ts, ts)
    assert (train_input - seen[0]).abs().max().item() < 1e-4
    h, w = gt[0, 0].any(1).sum().item(), gt[0, 0].any(0).sum().item()
    assert (h, w) == (round(shape[0] * ts / max(shape)), round(shape[1] * ts / max(shape)))
    assert (train_input[..., h:, :] == 0).all() and (train_input[..., w:] == 0).all()


@pytest.mark.parametrize("loss_rounds", ["last", "all"])
def test_one_step_on_a_fixed_batch_lowers_the_loss(tmp_path, loss_rounds):
    torch.manual_seed(0)
    model = build_model("hrsam_tiny")
    data = _dataset(1)
    kw = dict(ts=128, lr=1e-3, max_clicks=0, flip=False, loss_rounds=loss_rounds)
    first = train(model, data, TrainConfig(steps=1, **kw), tmp_path / "a").losses[0]
    cfg2 = TrainConfig(steps=2, **kw)
    second = train(model, data, cfg2, tmp_path / "a").losses[1]  # resumes, same image and click
    assert second < first


@pytest.mark.parametrize("loss_rounds", ["last", "all"])
def test_resume_reproduces_the_next_loss_exactly(tmp_path, loss_rounds):
    import shutil

    data = _dataset()
    cfg = TrainConfig(steps=4, ts=128, lr=5e-4, ckpt_every=2, gamma=0.9, loss_rounds=loss_rounds)
    torch.manual_seed(0)
    straight = train(build_model("hrsam_tiny"), data, cfg, tmp_path / "straight").losses
    # an interrupted run: only the step-2 checkpoint survived; a new process resumes from it
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "straight" / "step_000002.pt", tmp_path / "resumed" / "last.pt")
    torch.manual_seed(123)  # a fresh model with other weights: all state comes from the file
    resumed = train(build_model("hrsam_tiny"), data, cfg, tmp_path / "resumed").losses
    assert resumed[:2] == straight[:2]
    assert resumed[2:] == straight[2:]  # exactly equal
    loaded = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert loaded.preset.name == "hrsam_tiny"
    assert not list((tmp_path / "resumed").glob("*.tmp"))


def test_click_simulation_reuses_the_training_embedding_only_when_modes_agree():
    """Without dropout/drop-path the training forward's embedding is the eval one, so the click
    simulation may reuse it: same clicks, same previous logits as encoding in eval mode."""
    from hrsam.models.common import DropPath
    from hrsam.train.loop import is_deterministic, prepare, simulate_clicks

    torch.manual_seed(0)
    model = build_model("hrsam_tiny")
    assert is_deterministic(model)
    stochastic = build_model("hrsam_tiny")
    next(m for m in stochastic.modules() if isinstance(m, DropPath)).rate = 0.1
    assert not is_deterministic(stochastic)
    dropout = build_model("hrsam_tiny")
    dropout.add_module("extra", torch.nn.Dropout2d(0.1))
    assert not is_deterministic(dropout)
    cfg = TrainConfig(ts=128, gamma=0.9, mask_rounds=0)
    sample = _dataset(1)[0]
    image, gt = prepare(sample.image, sample.gt, 128, False, model.normalize)
    model.train()
    emb = model.encode(image)  # train mode, with gradients: what the loop computes
    rounds = 0
    for seed in range(4):
        own = simulate_clicks(model, image, gt, cfg, np.random.default_rng(seed))
        reused = simulate_clicks(model, image, gt, cfg, np.random.default_rng(seed), emb)
        assert own[0] == reused[0]
        if own[1] is None:
            assert reused[1] is None
        else:
            assert len(own[0]) > 1 and (own[1] - reused[1]).abs().max().item() <= 1e-4
            rounds += 1
    assert rounds > 0  # some seed simulated corrective rounds
    assert model.training  # the simulation restores the mode


def _spied_rounds():
    """A tiny model in train mode whose decoder calls are recorded as (embedding, points,
    labels, previous logits, low-res logits), one prepared sample; returns the model, image,
    mask, the calls and the real decode (to put back)."""
    from hrsam.train.loop import prepare

    torch.manual_seed(0)
    model = build_model("hrsam_tiny").train()
    sample = _dataset(1)[0]
    image, gt = prepare(sample.image, sample.gt, 128, False, model.normalize)
    calls = []
    decode = model.decode

    def spy(emb, pts, labels, prev):
        out = decode(emb, pts, labels, prev)
        calls.append((emb, pts.clone(), labels.clone(), prev, out[0]))
        return out

    model.decode = spy
    return model, image, gt, calls, decode


def test_all_rounds_loss_is_the_mean_over_rounds_of_an_explicit_replay():
    """``loss_rounds="all"``: round r decodes clicks 1..r+1 with round r-1's logits fed back
    detached, each new click lies in the previous round's error, and the loss is the mean of
    the rounds' focal losses, all reaching the encoder."""
    import torch.nn.functional as F

    from hrsam.train.loop import all_rounds_loss

    cfg = TrainConfig(ts=128, gamma=0.95, loss_rounds="all", mask_rounds=0)
    model, image, gt, calls, decode = _spied_rounds()
    best = 0
    for seed in range(6):
        calls.clear()
        emb = model.encode(image)
        emb.retain_grad()
        loss = all_rounds_loss(model, emb, gt, cfg, np.random.default_rng(seed))
        expected = []
        for r, (e, pts, labels, prev, low) in enumerate(calls):
            assert e is emb and pts.shape[1] == r + 1
            if r == 0:
                assert prev is None
            else:
                assert not prev.requires_grad and torch.equal(prev, calls[r - 1][4].detach())
                assert torch.equal(pts[:, :r], calls[r - 1][1])  # earlier clicks are kept
                up = F.interpolate(prev, size=gt.shape[-2:], mode="bilinear")
                x, y = pts[0, r].long().tolist()
                pred, truth = bool(up[0, 0, y, x] > 0), bool(gt[0, 0, y, x])
                assert pred != truth and bool(labels[0, r]) == truth  # a click on an error
            up = F.interpolate(low, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            expected.append(normalized_focal_loss(up, gt).item())
        assert loss.item() == pytest.approx(float(np.mean(expected)), rel=1e-6)
        loss.backward()
        assert emb.grad is not None and emb.grad.abs().sum() > 0
        best = max(best, len(calls))
    model.decode = decode
    assert best >= 3  # some seed ran several corrective rounds


def test_distillation_lowers_the_mse():
    torch.manual_seed(0)
    teacher = build_model("hrsam_tiny", window_size=4).eval()
    student = build_model("hrsam_tiny")
    data = _dataset(2)
    from hrsam.train.loop import prepare

    cache = {}

    def embed(index, image):
        if index not in cache:
            s = data[index]
            img, _ = prepare(s.image, s.gt, 128, False, teacher.normalize)
            with torch.no_grad():
                cache[index] = teacher.image_encoder(img)  # the backbone's embedding
        return cache[index]

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(recipe="distill", steps=30, ts=128, lr=2e-3, flip=False, layer_decay=0.9)
        losses = train(student, data, cfg, tmp, teacher=embed).losses
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["preset=hrsam_tiny", "steps=0"], "steps=0 must be >= 1"),
        (
            ["preset=hrsam_tiny", "data.name=davis", "data.root=/nonexistent"],
            "dataset root /nonexistent does not exist",
        ),
        (
            ["preset=hrsam_tiny", "recipe=distill", "teacher=sam_vit_b"],
            "teacher sam_vit_b embeds 256 channels but student hrsam_tiny embeds 64",
        ),
        (["preset=hrsam_tiny", "recipe=finetune"], "unknown recipe 'finetune'; valid: interactive"),
        (["preset=hrsam_tiny", "loss=dice"], "loss='dice' must be one of nfl, bce_dice"),
        (["preset=hrsam_tiny", "loss_rounds=every"], "loss_rounds='every' must be 'last' or"),
        (["preset=hrsam_tiny", "step=3"], "unknown key 'step'; did you mean 'steps'?"),
        (["preset=hrsam_tiny", "mask_rounds=-1"], "mask_rounds=-1 must be >= 0"),
        (["preset=hrsam_tiny", "inner_k=0.5"], "inner_k=0.5 must be >= 1"),
        (["preset=hrsam_tiny", "protocol=clicky"], "unknown protocol 'clicky'"),
        (["preset=hrsam_tiny", "data.objects=0"], "objects=0 must be N or MIN-MAX"),
        (
            ["preset=hrsam_tiny", "checkpoint=/nonexistent.pt"],
            "checkpoint /nonexistent.pt does not exist",
        ),
    ],
)
def test_train_cli_rejects_bad_input_before_work(argv, message, capsys, tmp_path):
    from hrsam.train.__main__ import main

    assert main([*argv, f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "last.pt").exists()


def test_train_cli_runs_and_resumes(tmp_path, capsys):
    from hrsam.train.__main__ import main

    argv = [
        "preset=hrsam_tiny",
        "steps=2",
        "ts=128",
        f"data.root={tmp_path / 'syn'}",
        "data.size=128",
        "data.n_train=2",
        f"out={tmp_path / 'run'}",
    ]
    assert main(argv) == 0
    assert (tmp_path / "run" / "last.pt").exists()
    assert main([*argv[:1], "steps=3", *argv[2:]]) == 0
    out = capsys.readouterr()
    assert "trained 3 steps" in out.out and "3/3" in out.err


def test_round_plan_draws_the_click_rounds_it_claims_and_its_mask_rounds():
    """P(n click rounds) ~ gamma^n on 0..max_clicks; exactly ``mask_rounds`` mask-only rounds,
    placed uniformly among the click rounds (including first and last place)."""
    from hrsam.train.loop import round_plan

    cfg = TrainConfig(gamma=0.8, max_clicks=4, mask_rounds=1)
    rng = np.random.default_rng(0)
    plans = [round_plan(cfg, rng) for _ in range(20000)]
    assert all(p.count(False) == 1 for p in plans)
    counts = np.bincount([p.count(True) for p in plans], minlength=5) / len(plans)
    want = 0.8 ** np.arange(5) / (0.8 ** np.arange(5)).sum()
    assert np.abs(counts - want).max() < 0.012, (counts, want)
    # with 2 click rounds the mask round is first, between or last, each a third of the time
    places = np.bincount([p.index(False) for p in plans if len(p) == 3], minlength=3)
    assert np.abs(places / places.sum() - 1 / 3).max() < 0.03
    none = TrainConfig(gamma=0.5, max_clicks=3, mask_rounds=0)
    assert all(all(p) for p in (round_plan(none, rng) for _ in range(100)))
    assert round_plan(TrainConfig(max_clicks=0, mask_rounds=2), rng) == [False, False]


def test_a_mask_round_decodes_the_same_clicks_with_the_previous_mask_and_is_in_the_loss():
    from hrsam.train.loop import all_rounds_loss

    cfg = TrainConfig(ts=128, max_clicks=0, mask_rounds=1, loss_rounds="all")
    model, image, gt, calls, decode = _spied_rounds()
    emb = model.encode(image)
    loss = all_rounds_loss(model, emb, gt, cfg, np.random.default_rng(0))
    model.decode = decode
    assert len(calls) == 2  # the first click, then one mask-only round
    (_, p0, _, prev0, low0), (_, p1, _, prev1, low1) = calls
    assert prev0 is None and torch.equal(p0, p1)  # no click added
    assert torch.equal(prev1, low0.detach())  # only the previous mask is new
    import torch.nn.functional as F

    up = [F.interpolate(x, size=gt.shape[-2:], mode="bilinear") for x in (low0, low1)]
    mean = np.mean([normalized_focal_loss(u, gt).item() for u in up])
    assert loss.item() == pytest.approx(mean, rel=1e-6)


def test_every_training_knob_reaches_trainconfig_from_the_command_line(tmp_path, monkeypatch):
    """``python -m hrsam.train`` has a key per TrainConfig knob of the interactive recipe, each
    with the dataclass's default, and each value arrives in the TrainConfig the loop gets."""
    import dataclasses

    import hrsam.train.__main__ as cli_main
    from hrsam.train import loop

    knobs = {"max_clicks": 3, "inner_k": 1.0, "mask_rounds": 2, "protocol": "ritm",
             "gamma": 0.7, "loss_rounds": "last", "loss": "bce_dice"}  # fmt: skip
    for key in knobs:
        assert cli_main.DEFAULTS[key] == getattr(TrainConfig, cli_main.TRAIN_FIELDS[key])
    seen = []
    monkeypatch.setattr(
        loop, "train", lambda m, d, cfg, out, **kw: seen.append(cfg) or loop.TrainState(1, [0.0])
    )
    argv = ["preset=hrsam_tiny", "steps=1", "ts=64", f"data.root={tmp_path}", "data.size=64",
            "data.n_train=1", "data.n_val=1", f"out={tmp_path / 'run'}"]  # fmt: skip
    cli_main.main([*argv, *(f"{k}={v}" for k, v in knobs.items())])
    [cfg] = seen
    assert {k: getattr(cfg, k) for k in knobs} == knobs
    assert dataclasses.replace(cfg, **knobs) == cfg
