"""Interactive training with simulated clicks and SAM-style distillation (HRSAM spec B.1-B.4).

Interactive step. The first click goes to the error centre (k = 1.0); then the round plan
(`round_plan`): ``n ~ P(n) proportional to gamma^n`` (n = 0..max_clicks) click rounds, each adding
a click with the training rule (the ``protocol`` clicker with k = ``inner_k``) where the previous
prediction is wrong, and ``mask_rounds`` rounds at random places after the first that add no
click, so the model gets only its previous mask to improve on (SAM's recipe). Every round feeds
the previous round's logits back, detached.

* ``loss_rounds="all"`` (the default, SAM's iterative training): the image is encoded once with
  gradients and every round is decoded in train mode; the losses of all rounds are averaged, so
  the model is rewarded for what every click and every previous mask adds.
* ``loss_rounds="last"`` (HRSAM B.3): the rounds are simulated in eval mode under no_grad and the
  loss falls on the final prediction only.

The loss is the normalized focal loss on the logits upsampled to the training canvas
(``loss="bce_dice"`` swaps it). Measured: benchmarks/results/cpu/train_tiny.md and, for the
click-use recipe of the embedded default, benchmarks/results/cpu/sweep_window_size.md.

Distillation (B.1): MSE between the student's embedding and a teacher's, the teacher embeddings
computed once to disk and reused.

Every ``ckpt_every`` steps (and at the end) the full training state is written atomically:
weights (our checkpoint format), optimizer, schedule and step. Sample ``j`` of step ``s`` draws its
image, flip and clicks from its own generator seeded ``(seed, s, j)``, so a resumed run reproduces
the next loss exactly, and data parallel training (`hrsam.train.distributed`; rank ``r`` takes
samples ``r * batch .. (r + 1) * batch - 1``) computes the same step as one process with the
whole global batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrsam import names
from hrsam.interactive.clicker import check_protocol, next_click
from hrsam.models.checkpoint import CheckpointError, atomic_save, checkpoint_record, read_state
from hrsam.models.common import DropPath
from hrsam.precision import autocast, check_precision
from hrsam.train import distributed
from hrsam.train.losses import LOSSES
from hrsam.train.optim import make_optimizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """A training run (recipe defaults from the official configs, scaled by ``steps``)."""

    recipe: str = "interactive"  # or "distill"
    steps: int = 1000
    ts: int = 1024
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup: int = 0
    layer_decay: float | None = None  # 0.9 for distillation (B.6); None for finetuning
    grad_clip: float | None = 1.0
    max_clicks: int = 8  # the most click rounds after the first click
    gamma: float = 0.85  # P(n click rounds) ~ gamma^n: mean 3.0 rounds at 0.85 with 8 at most
    inner_k: float = 1.7  # the training clicker's candidate ratio (1.0: the evaluation's rule)
    mask_rounds: int = 1  # rounds that add no click: only the previous mask to improve on
    protocol: str = "hrsam"  # the clicker of the rounds (hrsam.interactive.clicker)
    loss_rounds: str = "all"  # "all": a loss on every round (SAM); "last": HRSAM B.3
    loss: str = "nfl"  # a key of hrsam.train.losses.LOSSES: "nfl" (B.4) or "bce_dice"
    flip: bool = True
    seed: int = 42
    ckpt_every: int = 0  # 0: only at the end
    amp: bool = True  # bf16 autocast on CUDA only (when precision is None)
    # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler); None: bf16 on CUDA if amp
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.recipe not in ("interactive", "distill"):
            raise ValueError(f"recipe={self.recipe!r} must be 'interactive' or 'distill'")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if self.ts < 16 or self.ts % 16:
            raise ValueError(f"ts={self.ts} must be a positive multiple of 16")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} must be one of {', '.join(LOSSES)}")
        if self.precision is not None:
            check_precision(self.precision)
        if self.loss_rounds not in ("last", "all"):
            raise ValueError(f"loss_rounds={self.loss_rounds!r} must be 'last' or 'all'")
        if self.max_clicks < 0:
            raise ValueError(f"max_clicks={self.max_clicks} must be >= 0")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma} must be in (0, 1]")
        if self.inner_k < 1:
            raise ValueError(f"inner_k={self.inner_k} must be >= 1")
        if self.mask_rounds < 0:
            raise ValueError(f"mask_rounds={self.mask_rounds} must be >= 0")
        check_protocol(self.protocol)


def training_precision(cfg: TrainConfig, device: torch.device) -> str:
    """The precision a training runs in: ``cfg.precision``, else bf16 on CUDA when ``amp``."""
    if cfg.precision is not None:
        return cfg.precision
    return "bf16" if cfg.amp and device.type == "cuda" else "fp32"


def prepare(
    image: np.ndarray,
    mask: np.ndarray,
    ts: int,
    flip: bool,
    normalize: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Keep-ratio resize so the long side is ``ts`` (image bilinear, mask nearest), optional
    horizontal flip, ``normalize`` (the model's), then pad bottom/right to ts x ts with zeros
    (GT pad = background). Normalizing before padding makes the pad the mean colour, as in the
    official pipeline (B.2) and in `Predictor.set_image`, so training sees what evaluation
    feeds the encoder. Returns the normalized image (1, 3, ts, ts) and the mask (1, 1, ts, ts)
    bool."""
    img = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    m = torch.from_numpy(np.array(mask, dtype=np.float32))[None, None]
    h, w = m.shape[-2:]
    scale = ts / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    m = F.interpolate(m, size=size, mode="nearest")
    if flip:
        img, m = img.flip(-1), m.flip(-1)
    pad = (0, ts - size[1], 0, ts - size[0])
    return F.pad(normalize(img), pad), F.pad(m, pad) > 0.5


def _points(clicks) -> tuple[Tensor, Tensor]:
    pts = torch.tensor([[[c.x, c.y] for c in clicks]], dtype=torch.float32)
    labels = torch.tensor([[int(c.positive) for c in clicks]])
    return pts, labels


def round_plan(cfg: TrainConfig, rng: np.random.Generator) -> list[bool]:
    """The rounds after the first click: True adds a click, False only feeds the previous mask
    back. ``n`` click rounds with P(n) proportional to gamma^n (n = 0..max_clicks), and
    ``mask_rounds`` mask-only rounds inserted at uniformly random places among them (never
    before the first prediction: a mask round needs a mask)."""
    probs = cfg.gamma ** np.arange(cfg.max_clicks + 1)
    plan = [True] * int(rng.choice(len(probs), p=probs / probs.sum()))
    for _ in range(cfg.mask_rounds):
        plan.insert(int(rng.integers(len(plan) + 1)), False)
    return plan


def _first_click(gt: Tensor, cfg: TrainConfig, rng: np.random.Generator):
    """The centre click (k = 1.0) and the plan of the rounds after it (`round_plan`)."""
    gt_np = gt[0, 0].cpu().numpy()
    clicked = np.zeros_like(gt_np)
    first = next_click(gt_np, np.zeros_like(gt_np), clicked, cfg.protocol, rng=rng, inner_k=1.0)
    clicked[first.y, first.x] = True
    return gt_np, [first], clicked, round_plan(cfg, rng)


def _add_click(gt_np, logits: Tensor, clicks, clicked, cfg: TrainConfig, rng) -> bool:
    """The training clicker's next click where ``logits`` (canvas size) are wrong; False when
    the prediction is perfect (no click to add)."""
    pred = logits.detach()[0, 0].float().cpu().numpy() > 0
    click = next_click(gt_np, pred, clicked, cfg.protocol, rng=rng, inner_k=cfg.inner_k)
    if click is None:
        return False
    clicks.append(click)
    clicked[click.y, click.x] = True
    return True


def simulate_clicks(
    model,
    image: Tensor,
    gt: Tensor,
    cfg: TrainConfig,
    rng: np.random.Generator,
    emb: Tensor | None = None,
):
    """``loss_rounds="last"`` (B.3), under no_grad in eval mode: the clicks and the previous
    logits after the planned rounds.

    ``emb``: the image embedding when the caller already has it (see `is_deterministic`);
    otherwise the image is encoded here in eval mode.
    """
    gt_np, clicks, clicked, plan = _first_click(gt, cfg, rng)
    prev = None
    if not plan:
        return clicks, prev
    was_training = model.training
    model.eval()
    with torch.no_grad():
        emb = model.encode(image) if emb is None else emb.detach()
        for adds_click in plan:
            pts, labels = _points(clicks)
            prev, _ = model.decode(emb, pts.to(image.device), labels.to(image.device), prev)
            up = F.interpolate(prev, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            if adds_click and not _add_click(gt_np, up, clicks, clicked, cfg, rng):
                break
    model.train(was_training)
    return clicks, prev


def all_rounds_loss(
    model, emb: Tensor, gt: Tensor, cfg: TrainConfig, rng: np.random.Generator
) -> Tensor:
    """SAM-style iterative training (``loss_rounds="all"``): the first click, then the planned
    rounds, every round decoded with gradients in train mode and its loss averaged over the
    rounds. A click round adds the training clicker's click where the previous prediction is
    wrong; a mask round adds nothing. Each round gets the previous round's logits, detached.
    The encoder runs once; every round's loss reaches it through ``emb``."""
    gt_np, clicks, clicked, plan = _first_click(gt, cfg, rng)
    prev, total, n = None, 0.0, 0
    for r in range(len(plan) + 1):
        pts, labels = _points(clicks)
        low, _ = model.decode(emb, pts.to(emb.device), labels.to(emb.device), prev)
        logits = F.interpolate(low, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        total = total + LOSSES[cfg.loss](logits, gt)
        n += 1
        if r == len(plan) or (plan[r] and not _add_click(gt_np, logits, clicks, clicked, cfg, rng)):
            break
        prev = low.detach()
    return total / n


def interactive_loss(
    model, image: Tensor, gt: Tensor, cfg: TrainConfig, rng: np.random.Generator, reuse: bool
) -> Tensor:
    """One sample's interactive loss: every round's (``loss_rounds="all"``, `all_rounds_loss`)
    or the last round's after simulated rounds (B.3, `simulate_clicks`; ``reuse``: the click
    simulation may take the training forward's embedding, see `is_deterministic`)."""
    emb = model.encode(image)
    if cfg.loss_rounds == "all":
        return all_rounds_loss(model, emb, gt, cfg, rng)
    clicks, prev = simulate_clicks(model, image, gt, cfg, rng, emb if reuse else None)
    pts, labels = _points(clicks)
    low, _ = model.decode(
        emb, pts.to(emb.device), labels.to(emb.device), None if prev is None else prev.detach()
    )
    logits = F.interpolate(low, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    return LOSSES[cfg.loss](logits, gt)


def is_deterministic(model: nn.Module) -> bool:
    """Whether train mode computes what eval mode does (no active dropout, drop-path or batch
    norm). Then the click simulation reuses the training forward's image embedding instead of
    encoding the image a second time in eval mode: the same values, one encoder pass less."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
        if isinstance(m, DropPath) and m.rate > 0:
            return False
    return True


@dataclass
class TrainState:
    step: int
    losses: list[float]


def save_training_state(
    path: Path,
    model,
    opt,
    sched,
    step: int,
    cfg: TrainConfig,
    losses: list[float],
) -> None:
    """Writes everything a resume needs, atomically (an interrupted write keeps the old file)."""
    world = distributed.current().world_size
    record = checkpoint_record(model, step=step, train={**asdict(cfg), "world_size": world})
    record.update(
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        step=step,
        losses=losses,
        torch_rng=torch.get_rng_state(),
    )
    atomic_save(record, path)


def _resume(last: Path, model, opt, sched) -> tuple[int, list[float]]:
    """Model, optimizer, schedule and torch RNG from a training state; (its step, losses)."""
    state = read_state(last)
    if "optimizer" not in state:
        raise CheckpointError(f"{last} is not a training state (no optimizer)")
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resumed %s at step %d", last, int(state["step"]))
    return int(state["step"]), list(state["losses"])


def _sample_loss(
    model, dataset, cfg: TrainConfig, rng, to_input, teacher, reuse_embedding, precision: str
):
    """One sample's loss, drawn and flipped by ``rng`` (prepared in full precision, the loss
    under ``precision``'s autocast): the interactive loss, or the distillation MSE to the
    teacher's embedding."""
    device = next(model.parameters()).device
    index = int(rng.integers(len(dataset)))
    sample = dataset[index]
    flip = cfg.flip and bool(rng.random() < 0.5)
    image, gt = prepare(sample.image, sample.gt, cfg.ts, flip, to_input)
    gt = gt.to(device)
    with autocast(device, precision):
        if cfg.recipe == "interactive":
            return interactive_loss(model, image, gt, cfg, rng, reuse_embedding)
        target = teacher(index, image).to(device)
        # the backbone's embedding (not a detail path's packed channels: they are no encoder's)
        return F.mse_loss(model.image_encoder(image).float(), target.float())


def _report(step: int, steps: int, loss: float, lr: float, progress, on_step) -> None:
    if progress is not None:
        progress(step, steps, loss)
    if on_step is not None:
        on_step(step, {names.TRAIN_LOSS: loss, names.LR: lr})


def train(
    model,
    dataset,
    cfg: TrainConfig,
    out: str | Path,
    teacher: Callable[[int, Tensor], Tensor] | None = None,
    resume: bool = True,
    progress: Callable[[int, int, float], None] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainState:
    """Trains ``model`` in place; writes ``out/last.pt`` (and ``out/step_<n>.pt``).

    Args:
        model: an `InteractiveSegmenter` built by ``build_model`` (its preset is saved).
        dataset: samples with ``image`` (H, W, 3) uint8 and ``gt`` (H, W) bool.
        cfg: the run.
        out: output folder; an existing ``last.pt`` is resumed when ``resume``.
        teacher: for ``distill``: (sample index, prepared image) -> teacher embedding.
        progress: called with (step, steps, loss) after every step (on rank 0 only).

    Under a process group (`hrsam.train.distributed.init`) each rank trains ``batch_size``
    samples per step and gradients are averaged; rank 0 writes the checkpoints.
    """
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty")
    if cfg.recipe == "distill" and teacher is None:
        raise ValueError("recipe 'distill' needs a teacher")
    out = Path(out)
    device = next(model.parameters()).device
    dist_env = distributed.current()
    torch.manual_seed(cfg.seed)
    distributed.broadcast_parameters(model)
    opt, sched = make_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.steps, cfg.warmup, cfg.layer_decay
    )
    last = out / "last.pt"
    step, losses = _resume(last, model, opt, sched) if resume and last.exists() else (0, [])
    precision = training_precision(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    reuse_embedding = is_deterministic(model)

    def to_input(img: Tensor) -> Tensor:
        return model.normalize(img.to(device))

    model.train()
    while step < cfg.steps:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        first = dist_env.rank * cfg.batch_size
        for j in range(first, first + cfg.batch_size):
            rng = np.random.default_rng([cfg.seed, step, j])
            loss = _sample_loss(
                model, dataset, cfg, rng, to_input, teacher, reuse_embedding, precision
            )
            scaler.scale(loss / cfg.batch_size).backward()
            total += loss.item() / cfg.batch_size
        distributed.average_gradients(model)
        total = distributed.mean(total, device)
        scaler.unscale_(opt)  # no-op unless fp16
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        losses.append(total)
        if not math.isfinite(total):
            raise FloatingPointError(f"loss is {total} at step {step}")
        if dist_env.is_main:
            _report(step, cfg.steps, total, sched.get_last_lr()[0], progress, on_step)
        periodic = bool(cfg.ckpt_every) and step % cfg.ckpt_every == 0
        # last.pt first: a job preempted between the two writes resumes from this step, and
        # whoever sees step_<n>.pt knows a resume starts at n or later
        if dist_env.is_main and (periodic or step == cfg.steps):
            save_training_state(last, model, opt, sched, step, cfg, losses)
        if dist_env.is_main and periodic:
            save_training_state(out / f"step_{step:06d}.pt", model, opt, sched, step, cfg, losses)
    distributed.barrier()
    return TrainState(step, losses)
