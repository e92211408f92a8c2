"""What the decoder's detail path (`hrsam.models.detail`) costs: one tiny preset with and without
it, side by side in one run.

    python -m benchmarks.detail_cost                                # hrsam_tiny, detail 0 16
    python -m benchmarks.detail_cost --preset sam_tiny --detail 0 16 32 --ts 512 1024
    python -m benchmarks.detail_cost --refine 8              # + 16 with the T/2 refine

Every row is the same model: the plain one (``detail=0``, built from ``--seed``) and copies of
it with the path added (`add_detail`, its last layer zero; with ``--refine``, also each with
the T/2 refine after it, `add_refine`, whose masks are the T/4 ones upsampled 2x until
trained), so before anything is timed the run checks that every row draws the plain model's
mask for the same image and clicks. Then, per ts,
in rounds whose order rotates from round to round: ``encode`` (`InteractiveSegmenter.encode`:
the image encoder and, with the path, its detail encoder; once per image) and ``click`` (one
`InteractiveSegmenter.decode` with three clicks and the previous mask: what each click costs
once the image is encoded), no autograd. Then the training step at ``--train-ts``
(`benchmarks.train_step`'s `Trainer`: the B.3 step part by part), the rows stepping in turn on
the same samples. Parameters and the analytic encoder GFLOPs (`hrsam.profiling.encoder_flops`,
which counts the detail encoder) stand beside. Each width is compared with the plain row as the
geometric mean of the paired ratios (round by round, step by step) with a 95% bootstrap
interval. Writes ``detail_cost.csv`` and ``detail_cost.md`` under ``--out``.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import interval, render
from benchmarks._timing import median_ms, paired_ratio
from benchmarks.train_step import Trainer, summarize, tiny_config
from hrsam.models import build_model
from hrsam.models.detail import add_detail, add_refine
from hrsam.profiling import encoder_flops

CLICKS = 3  # clicks in the timed decode (the previous mask too)


def parse_args(argv: list[str] | None = None):
    p = scaffold.parser(
        "detail_cost",
        "Encode, click and training-step time of a tiny preset with and without the decoder's "
        "detail path, paired in one run.",
        "--preset hrsam_tiny --detail 0 16 32 --ts 512 1024",
    )
    p.add_argument("--preset", default="hrsam_tiny")
    p.add_argument("--detail", type=int, nargs="+", default=[0, 16], help="path widths (0: none)")
    p.add_argument(
        "--refine", type=int, default=0, help="also each width with a T/2 refine of this width"
    )
    p.add_argument("--ts", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--train-ts", type=int, default=512, help="the training step's ts (0: skip)")
    p.add_argument("--steps", type=int, default=20, help="training steps per row, warm-up included")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds and steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="data/synthetic_tiny")
    scaffold.add_options(p, "reps", "out", reps=20)
    args = scaffold.parse(p, argv)
    if 0 not in args.detail:
        p.error(f"--detail {args.detail}: must hold 0, the plain row the others are paired with")
    if min(args.detail) < 0:
        p.error(f"--detail {min(args.detail)}: widths are >= 0")
    bad = [t for t in args.ts + ([args.train_ts] if args.train_ts else []) if t % 16]
    if bad:
        p.error(f"--ts {bad[0]}: must be a multiple of 16 (the patch size)")
    if args.reps <= args.warmup or (args.train_ts and args.steps <= args.warmup):
        p.error(f"--reps {args.reps} / --steps {args.steps}: must be more than --warmup")
    args.detail = sorted(set(args.detail))
    return args


def build_rows(preset: str, widths: list[int], seed: int, training: bool, refine: int = 0):
    """{row name: model}: the plain model (seeded, ``"0"``) and a copy per width with the path
    added (each seeded too); with ``refine``, each of those again with the T/2 refine
    (``"16+r8"``)."""
    torch.manual_seed(seed)
    plain = build_model(preset, training=training, detail=0)
    rows = {}
    for w in widths:
        model = copy.deepcopy(plain)
        if w:
            torch.manual_seed(seed + w)
            add_detail(model, w)
        rows[str(w)] = model
        if w and refine:
            torch.manual_seed(seed + w + refine)
            rows[f"{w}+r{refine}"] = add_refine(copy.deepcopy(model), refine)
    return rows


def inputs(ts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A normalized-range image, ``CLICKS`` clicks (first positive) and a previous mask."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, ts, ts, generator=g)
    points = torch.randint(0, ts, (1, CLICKS, 2), generator=g).float()
    labels = torch.tensor([[1] + [int(i % 2 == 0) for i in range(1, CLICKS)]])
    prev = torch.randn(1, 1, ts // 4, ts // 4, generator=g)
    return image, points, labels, prev


@torch.no_grad()
def same_masks(rows: dict[str, torch.nn.Module], ts: int, seed: int) -> float:
    """The largest difference of any row's low-resolution logits from the plain row's."""
    image, points, labels, prev = inputs(ts, seed)
    out = {w: m.eval().decode(m.encode(image), points, labels, prev)[0] for w, m in rows.items()}
    up = dict(scale_factor=2, mode="bilinear", align_corners=False)
    want = {False: out["0"], True: F.interpolate(out["0"], **up)}  # T/4, and a refine's T/2
    return max(
        (o - want[o.shape[-1] > out["0"].shape[-1]]).abs().max().item() for o in out.values()
    )


@torch.no_grad()
def time_inference(rows: dict[str, torch.nn.Module], ts: int, reps: int, warmup: int, seed: int):
    """Per row, the seconds of ``encode`` and of ``click`` in each timed round."""
    image, points, labels, prev = inputs(ts, seed)
    order = list(rows)
    times = {w: {"encode": [], "click": []} for w in rows}
    embeddings = {w: rows[w].eval().encode(image) for w in rows}
    for r in range(reps):
        k = r % len(order)
        for w in order[k:] + order[:k]:  # rotated, so that no row always runs first
            m, clock = rows[w], time.perf_counter()
            m.encode(image)
            encode = time.perf_counter() - clock
            clock = time.perf_counter()
            m.decode(embeddings[w], points, labels, prev)
            click = time.perf_counter() - clock
            if r >= warmup:
                times[w]["encode"].append(encode)
                times[w]["click"].append(click)
    return times


def time_training(rows: dict[str, torch.nn.Module], args) -> dict[str, Trainer]:
    """``--steps`` B.3 steps of each row in turn (rotated), the same samples for every row."""
    from hrsam.data import build_dataset

    data = build_dataset(
        "synthetic", args.data_root, split="train", n_train=64, n_val=8, size=args.train_ts
    )
    cfg = dataclasses.replace(tiny_config(args.steps), ts=args.train_ts)
    trainers = {w: Trainer(m, data, cfg) for w, m in rows.items()}
    order = list(trainers.values())
    for i in range(args.steps):
        k = i % len(order)
        for tr in order[k:] + order[:k]:
            tr.run_step()
        print(f"\rtraining step {i + 1}/{args.steps}", end="", flush=True)
    print()
    return trainers


def params(model: torch.nn.Module) -> tuple[int, int]:
    """All parameters, and those of the detail path (encoder, fuse and any refine)."""
    dec = model.mask_decoder
    path = [model.detail_encoder, dec.detail_fuse, dec.detail_refine]
    extra = sum(p.numel() for m in path if m is not None for p in m.parameters())
    return sum(p.numel() for p in model.parameters()), extra


def measure(args) -> tuple[list[dict], list[dict]]:
    """Per (width, ts): the medians; per (width > 0, ts, part): the ratio against width 0."""
    rows, pairs = [], []
    for ts in args.ts:
        models = build_rows(args.preset, args.detail, args.seed, False, args.refine)
        diff = same_masks(models, ts, args.seed)
        if diff > 1e-5:
            raise SystemExit(
                f"detail_cost: a row's masks differ from the plain row's by {diff:.2e}"
            )
        times = time_inference(models, ts, args.reps, args.warmup, args.seed)
        for w, m in models.items():
            total, extra = params(m)
            flops = encoder_flops(m.preset, ts) / 1e9
            rows.append(
                {
                    "detail": w,
                    "ts": ts,
                    "params": total,
                    "path_params": extra,
                    "encoder_gflop": round(flops, 3),
                    **{f"{k}_ms": median_ms(v) for k, v in times[w].items()},
                }
            )
            if w != "0":
                for part in ("encode", "click"):
                    pairs.append(
                        {
                            "detail": w,
                            "ts": ts,
                            "part": part,
                            **paired_ratio(times[w][part], times["0"][part]),
                        }
                    )
        print(f"ts {ts}: timed {args.reps - args.warmup} rounds of {len(models)} rows", flush=True)
    if args.train_ts:
        models = build_rows(args.preset, args.detail, args.seed, True, args.refine)
        trainers = time_training(models, args)
        steps = {
            w: np.array([sum(p.values()) for p in tr.parts[args.warmup :]])
            for w, tr in trainers.items()
        }
        for w, tr in trainers.items():
            ms = round(1e3 * summarize(tr, args.warmup)["step"], 1)
            rows.append({"detail": w, "ts": args.train_ts, "train_step_ms": ms})
            if w != "0":
                ratio = paired_ratio(steps[w], steps["0"])
                pairs.append({"detail": w, "ts": args.train_ts, "part": "train step", **ratio})
    return rows, pairs


def _order(name: str) -> tuple[int, int]:
    """A row name's sort key: width, then refine."""
    w, _, r = name.partition("+r")
    return int(w), int(r or 0)


def table(rows: list[dict]) -> str:
    """One line per (width, ts): params, GFLOPs, encode / click / training-step ms."""
    merged: dict[tuple[int, int], dict] = {}
    for r in rows:
        merged.setdefault((r["detail"], r["ts"]), {}).update(r)
    header = ["detail", "ts", "params", "path params", "encoder GFLOP", "encode ms", "click ms"]
    body = []
    for (w, ts), r in sorted(merged.items(), key=lambda x: (x[0][1], _order(x[0][0]))):
        counts = [f"{r[k]:,}" if k in r else "-" for k in ("params", "path_params")]
        body.append(
            [str(w), str(ts), *counts, scaffold.fmt(r.get("encoder_gflop"), 2)]
            + [scaffold.fmt(r.get(k), 2) for k in ("encode_ms", "click_ms", "train_step_ms")]
        )
    return render(body, [*header, "train step ms"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    refine = [f"refine {args.refine}"] if args.refine else []
    scaffold.banner(scaffold.CPU, args.preset, f"detail {args.detail}", *refine, f"ts {args.ts}")
    rows, pairs = measure(args)
    text = table(rows)
    lines = [
        f"detail {p['detail']} against none, {p['part']} at ts {p['ts']}: {interval(p)}"
        for p in pairs
    ]
    scaffold.show(text, lines)
    settings = (
        f"- {args.preset}, fp32, batch 1, {torch.get_num_threads()} threads; the rows are one "
        f"model (seed {args.seed}) with and without the path (`W+rH`: with the T/2 refine of H "
        f"channels), checked to draw the same masks; "
        f"encode and click: {args.reps - args.warmup} timed rounds per ts (order rotated), "
        f"{CLICKS} clicks and the previous mask; train step: `benchmarks.train_step`'s B.3 step "
        f"at ts {args.train_ts}, {args.steps - args.warmup} timed steps per row in turn; ms = "
        f"medians; ratios = geometric mean of the paired ratios with a 95% bootstrap interval\n"
    )
    md = scaffold.markdown(
        "The decoder's detail path: what it costs", "detail_cost", argv, settings, text, lines
    )
    scaffold.write_results(
        scaffold.results_dir(args.out),
        "detail_cost",
        [
            "detail",
            "ts",
            "params",
            "path_params",
            "encoder_gflop",
            "encode_ms",
            "click_ms",
            "train_step_ms",
            "part",
            "ratio",
            "lo",
            "hi",
        ],
        rows + pairs,
        md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
