"""Where a training step of the tiny recipe spends its time, part by part.

    python -m benchmarks.train_step                         # hrsam_tiny, ts 512, 30 steps
    python -m benchmarks.train_step --steps 60 --variants default unfused

Runs the interactive step of `hrsam.train.loop.train` (spec B.3) on the ``tiny-synthetic`` recipe
(``hrsam_tiny`` at ts 512 on the synthetic dataset, lr 1e-3, warm-up 50, gamma 0.8), with a
timer around each part: data (read, resize, flip, normalize), encoder forward (with autograd),
click simulation (the no-grad decoder rounds and the clicker), decoder forward and loss, decoder
backward, encoder backward (split where the gradient reaches the image embedding), optimizer
(zero_grad, clip, step, schedule). The first steps are warm-up; each part's median and the
step's median and steps/s come from the rest. Step FLOPs are the encoder's (analytic forward
count x 3 for forward and backward; decoder and clicks left out, so the share is a lower bound),
compared with a dense matmul measured in the same run.

Variants train the same initial weights on the same samples, one step of each in turn (the
order rotating from step to step), so the comparison is within one run: ``default`` (the code as
it is), ``unfused`` (the cycle-scan as R-fold copies of u, dt, B, C through the generic
selective scan, the path before the fused training kernel of
`hrsam.ssm.cpu_scan.fused_cycle_scan`) and ``generic`` (autograd's generic index backward for
the window gathers, the path before `hrsam.attention.gather`). The losses of
the variants are checked equal before anything is reported, and a test checks that the step
computes what `hrsam.train.loop.train` computes. Each earlier path is compared with ``default``
step by step: the geometric mean of the per-step ratios of a part's time, with a 95% bootstrap
interval over the steps (`reports.stats.bootstrap`, fixed seed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import interval, render
from benchmarks._timing import dense_matmul_gflops, median_ms, paired_ratio, write_csv
from hrsam.attention.gather import generic_index_backward
from hrsam.models import build_model
from hrsam.profiling import encoder_flops
from hrsam.ssm.cycle_scan import unfused_cycle_scan
from hrsam.train.loop import TrainConfig, _points, is_deterministic, prepare, simulate_clicks
from hrsam.train.losses import LOSSES
from hrsam.train.optim import make_optimizer

PARTS = ["data", "enc fwd", "clicks", "dec fwd+loss", "dec bwd", "enc bwd", "optimizer"]
VARIANTS = {
    "default": contextlib.nullcontext,
    "unfused": unfused_cycle_scan,
    "generic": generic_index_backward,
}
BEFORE = {  # what each earlier path is, for the paired lines
    "unfused": "cycle-scan as R-fold copies + generic scan",
    "generic": "window gathers through autograd's generic index backward",
}
# the tiny-synthetic recipe (hrsam.train.__main__.TINY)
TINY = dict(ts=512, lr=1e-3, warmup=50, gamma=0.8, steps=3000)


@dataclass
class Trainer:
    """One model and optimizer, stepped as `hrsam.train.loop.train` steps (batch 1, CPU)."""

    model: torch.nn.Module
    dataset: object
    cfg: TrainConfig
    variant: str = "default"
    step: int = 0
    losses: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.cfg
        self.opt, self.sched = make_optimizer(
            self.model, c.lr, c.weight_decay, c.steps, c.warmup, c.layer_decay
        )
        if c.loss_rounds != "last":
            raise ValueError(
                f"loss_rounds={c.loss_rounds!r}: Trainer times the loss_rounds='last' step only"
            )
        self.reuse = is_deterministic(self.model)
        self.model.train()

    def run_step(self) -> None:
        """One step; appends its loss and the seconds of each part."""
        model, cfg, device = self.model, self.cfg, next(self.model.parameters()).device
        t = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            t[name] = t.get(name, 0.0) + now - clock
            clock = now

        with VARIANTS[self.variant]():
            self.opt.zero_grad(set_to_none=True)
            lap("optimizer")
            rng = np.random.default_rng([cfg.seed, self.step, 0])
            sample = self.dataset[int(rng.integers(len(self.dataset)))]
            flip = cfg.flip and bool(rng.random() < 0.5)
            image, gt = prepare(
                sample.image, sample.gt, cfg.ts, flip, lambda x: model.normalize(x.to(device))
            )
            gt = gt.to(device)
            lap("data")
            emb = model.encode(image)
            lap("enc fwd")
            clicks, prev = simulate_clicks(model, image, gt, cfg, rng, emb if self.reuse else None)
            lap("clicks")
            pts, labels = _points(clicks)
            low, _ = model.decode(
                emb, pts.to(device), labels.to(device), None if prev is None else prev.detach()
            )
            logits = F.interpolate(low, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            loss = LOSSES[cfg.loss](logits, gt)
            lap("dec fwd+loss")
            emb.register_hook(lambda g: lap("dec bwd"))  # the decoder's gradient is complete
            loss.backward()
            lap("enc bwd")
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            lap("optimizer")
        self.step += 1
        self.losses.append(loss.item())
        self.parts.append(t)


def step_flops(preset, ts: int) -> float:
    """Encoder FLOPs of one training step: the analytic forward count
    (`hrsam.profiling.encoder_flops`) times 3 (the backward is about twice the forward). The
    decoder, the click rounds and the optimizer are left out, so the share is a lower bound."""
    return 3.0 * encoder_flops(preset, ts)


def tiny_config(steps: int) -> TrainConfig:
    """The recipe train_step.md profiles: the tiny-synthetic schedule with HRSAM's B.3 step
    (rounds simulated without gradients, the loss on the last; gamma 0.8, up to 20 rounds, no
    mask-only round), the path `Trainer` times part by part."""
    return TrainConfig(
        steps=max(steps, TINY["steps"]),
        ts=TINY["ts"],
        lr=TINY["lr"],
        warmup=TINY["warmup"],
        gamma=TINY["gamma"],
        max_clicks=20,
        mask_rounds=0,
        loss_rounds="last",
    )


def summarize(trainer: Trainer, warmup: int) -> dict[str, float]:
    """Median seconds of each part and of the whole step over the steps after ``warmup``."""
    timed = trainer.parts[warmup:]
    out = {p: statistics.median(s.get(p, 0.0) for s in timed) for p in PARTS}
    totals = sorted(sum(s.values()) for s in timed)
    out["step"] = statistics.median(totals)
    q = statistics.quantiles(totals, n=4) if len(totals) >= 4 else (totals[0], 0, totals[-1])
    out["spread"] = (q[-1] - q[0]) / 2
    return out


def paired(trainers: dict[str, Trainer], warmup: int) -> list[dict]:
    """Each earlier path against ``default``, step by step (same step index, same sample): for the
    encoder backward and the whole step, the geometric mean of the per-step ratios
    earlier / default and its 95% bootstrap interval over the steps."""
    if "default" not in trainers:
        return []

    def times(tr: Trainer, part: str) -> np.ndarray:
        parts = tr.parts[warmup:]
        return np.array([sum(s.values()) if part == "step" else s[part] for s in parts])

    out = []
    for v, tr in trainers.items():
        if v == "default":
            continue
        for part in ("enc bwd", "step"):
            before, after = times(tr, part), times(trainers["default"], part)
            out.append(
                {
                    "variant": v,
                    "part": part,
                    "before_ms": median_ms(before),
                    "after_ms": median_ms(after),
                    **paired_ratio(before, after),
                    "steps": len(before),
                }
            )
    return out


def paired_lines(pairs: list[dict]) -> list[str]:
    """Per earlier path, its paired parts: the medians and the ratio with its interval."""
    lines = []
    for v in dict.fromkeys(r["variant"] for r in pairs):
        lines.append(f"default against {v} ({BEFORE[v]}), paired by step:")
        for r in (r for r in pairs if r["variant"] == v):
            lines.append(
                f"  {r['part']}: {r['before_ms']:.1f} -> {r['after_ms']:.1f} ms (medians); "
                f"{interval(r)} over {r['steps']} steps"
            )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--steps`` not above ``--warmup`` is a one-line error (exit 2)."""
    p = scaffold.parser(
        "train_step",
        "Time per part of a tiny-recipe training step (data, encoder, clicks, decoder, "
        "backward, optimizer), steps/s and FLOP share of the matmul rate.",
        "--steps 30 --variants default unfused",
    )
    p.add_argument("--preset", default="hrsam_tiny")
    p.add_argument("--steps", type=int, default=30, help="steps per variant, warm-up included")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--data-root", type=Path, default=Path("data/synthetic_tiny"))
    p.add_argument("--n-train", type=int, default=256)
    scaffold.add_options(p, "out")
    args = scaffold.parse(p, argv)
    if args.steps <= args.warmup:
        p.error(f"--steps {args.steps}: must be more than --warmup {args.warmup}")
    return args


def build_trainers(args: argparse.Namespace, cfg: TrainConfig) -> dict[str, Trainer]:
    """One `Trainer` per variant, each on its own copy of the same initial model and the same
    synthetic training split."""
    from hrsam.data import build_dataset

    dataset = build_dataset(
        "synthetic", str(args.data_root), split="train", n_train=args.n_train, n_val=16, size=512
    )
    torch.manual_seed(cfg.seed)
    model = build_model(args.preset)
    return {v: Trainer(copy.deepcopy(model), dataset, cfg, v) for v in args.variants}


def run_steps(trainers: dict[str, Trainer], steps: int) -> str | None:
    """``steps`` steps of every variant, one of each in turn; then the check that the variants
    computed the same losses: None, or the mismatch to report."""
    order = list(trainers.values())
    for i in range(steps):  # one step of each variant in turn: same load, same samples
        k = i % len(order)  # rotated, so that no variant always runs first (cold caches)
        for tr in order[k:] + order[:k]:
            tr.run_step()
        print(f"\rstep {i + 1}/{steps}", end="", flush=True)
    print()
    first = order[0]
    for v, tr in trainers.items():  # correctness first: the variants compute the same training
        diff = max(abs(a - b) for a, b in zip(tr.losses, first.losses, strict=True))
        if diff > 1e-3 * max(1.0, max(abs(x) for x in first.losses)):
            return f"mismatch: variant {v} losses differ from {first.variant} by {diff:.2e}"
    return None


def parts_table(stats: dict[str, dict[str, float]], flops: float, rate: float) -> str:
    """Per variant: the median ms of each part, the step's median and spread, steps/s and the
    share of the matmul rate."""
    header = ["variant", *(f"{p} ms" for p in PARTS), "step ms", "steps/s", "% matmul"]
    rows = []
    for v, s in stats.items():
        share = flops / (s["step"] * rate * 1e9)
        rows.append(
            [
                v,
                *(f"{1e3 * s[p]:.1f}" for p in PARTS),
                f"{1e3 * s['step']:.0f} ± {1e3 * s['spread']:.0f}",
                f"{1 / s['step']:.2f}",
                f"{100 * share:.0f}",
            ]
        )
    return render(rows, header)


def largest_parts(stats: dict[str, dict[str, float]], flops: float) -> list[str]:
    """The step's FLOPs, and per variant its largest part and that part's share of the step."""
    lines = [f"Step FLOPs (encoder forward + backward, analytic): {flops / 1e9:.2f} GFLOP"]
    for v, s in stats.items():
        top = max(PARTS, key=lambda x: s[x])
        lines.append(
            f"  {v}: largest part {top} {1e3 * s[top]:.1f} ms = {100 * s[top] / s['step']:.0f}% "
            f"of the step"
        )
    return lines


def write_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    cfg: TrainConfig,
    stats: dict[str, dict[str, float]],
    pairs: list[dict],
    flops: float,
    rate: float,
    table: str,
    lines: list[str],
) -> None:
    """``train_step.csv`` (per variant, ms), ``train_step_paired.csv`` (the paired ratios, when
    there are any) and ``train_step.md`` (the run's settings, the table and the lines) under
    ``--out`` or ``results/cpu``."""
    settings = (
        f"- {args.preset}, ts {cfg.ts}, batch 1, fp32; {args.steps} steps per variant, one of "
        f"each in turn, the first {args.warmup} warm-up; ms = median per step (csv values in "
        f"ms); dense 2048^3 matmul {rate:.1f} GFLOP/s (same run, best of start and end); "
        f"% matmul = step FLOPs / (step time x matmul rate)\n"
    )
    title = "Training step of the tiny recipe, part by part"
    out_dir = scaffold.results_dir(args.out)
    scaffold.write_results(
        out_dir,
        "train_step",
        ["variant", *PARTS, "step", "spread", "step_gflop", "matmul_gflops"],
        [
            {
                "variant": v,
                **{k: round(1e3 * x, 2) for k, x in s.items()},
                "step_gflop": round(flops / 1e9, 3),
                "matmul_gflops": round(rate, 1),
            }
            for v, s in stats.items()
        ],
        scaffold.markdown(title, "train_step", argv, settings, table, lines),
    )
    if pairs:
        write_csv(out_dir / "train_step_paired.csv", list(pairs[0]), pairs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = scaffold.CPU
    cfg = tiny_config(args.steps)
    trainers = build_trainers(args, cfg)
    rate = dense_matmul_gflops(device, torch.float32)
    scaffold.banner(device, f"{args.preset} ts {cfg.ts}", f"dense 2048^3 matmul {rate:.1f} GFLOP/s")
    flops = step_flops(next(iter(trainers.values())).model.preset, cfg.ts)
    mismatch = run_steps(trainers, args.steps)
    if mismatch:
        print(mismatch)
        return 1
    rate = max(rate, dense_matmul_gflops(device, torch.float32))
    stats = {v: summarize(tr, args.warmup) for v, tr in trainers.items()}
    table = parts_table(stats, flops, rate)
    lines = largest_parts(stats, flops)
    pairs = paired(trainers, args.warmup)
    lines += paired_lines(pairs)
    scaffold.show(table, lines)
    write_results(args, argv, cfg, stats, pairs, flops, rate, table, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
