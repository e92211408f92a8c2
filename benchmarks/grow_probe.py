"""Capacity probe: would a deeper tiny model fit better? A committed base grown deeper
(`hrsam.models.grow`: new blocks in the middle that start as the identity, so training starts
from the base's own function), or with wider mask features (``--mask-channels``) or a detail
path for the decoder (``--detail``, `hrsam.models.detail`), trained as one more recipe stage
and validated as the manifests are (benchmarks/results/cpu/pretrain.md, sessions 16-17).
Compare it with the same stage without the change (a ``--from-base`` run of the recipe with that
stage) from the same base.

    python -m benchmarks.grow_probe hrsam_tiny --lr 3e-4 --out outputs/grow/hrsam_tiny \\
        --data-root data/synthetic_3e-4

Writes ``<out>/last.pt`` (the training state, resumable) and ``<out>/validation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grow_probe", description=__doc__)
    p.add_argument("preset", help="a preset with a committed base (hrsam/pretrained/)")
    p.add_argument("--out", required=True, help="training folder (resumed if it holds last.pt)")
    p.add_argument(
        "--depth",
        type=int,
        default=6,
        help="blocks after growing (default 6; the preset's own: no new blocks)",
    )
    p.add_argument(
        "--mask-channels",
        type=int,
        default=0,
        help="per-pixel mask features after "
        "widening the decoder's last layers (default 0: as they are)",
    )
    p.add_argument(
        "--detail",
        type=int,
        default=0,
        help="channels of a detail path at T/4 added to the decoder (hrsam.models.detail; "
        "default 0: none; a base with one keeps it)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        help="hidden channels of a T/2 refine after the detail path (hrsam.models.detail."
        "add_refine: the decoder's masks at T/2; default 0: none)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        help="context blocks on the detail path's T/4 features (hrsam.models.detail."
        "add_context: a receptive field of 103 input px with 2; default 0: none)",
    )
    p.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig key of the stage, as the recipe's (e.g. loss=bce_dice_band, "
        "gamma=0.95, max_clicks=20); repeatable",
    )
    p.add_argument("--lr", type=float, default=None, help="peak rate (default: the recipe's)")
    p.add_argument("--ts", type=int, default=512)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=2, help="the stage's seed (new blocks, samples)")
    p.add_argument("--data-root", default=None, help="the recipe's scenes (default: its root)")
    p.add_argument("--recipe", default=None, help="pretraining recipe (default: the committed)")
    return p


def _train_keys(pairs: list[str]) -> dict:
    """``--train KEY=VALUE`` pairs -> TrainConfig keys, the values parsed as YAML (numbers);
    ValueError for a pair without ``=`` or a key TrainConfig lacks."""
    import yaml

    from hrsam.train.loop import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(
                f"{pair}: write KEY=VALUE with a TrainConfig key ({', '.join(sorted(fields))})"
            )
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from ablations.pretrain import RECIPE, data_config, load_recipe, train_config, validate
    from hrsam import pretrained
    from hrsam.models import build_model
    from hrsam.models.detail import add_context, add_detail, add_refine
    from hrsam.models.grow import grow, widen_mask_features
    from hrsam.names import MIOU1, NOC90, NOF90
    from hrsam.train.loop import train

    recipe = load_recipe(Path(args.recipe) if args.recipe else RECIPE)
    torch.set_num_threads(recipe["threads"])
    try:
        tc = dataclasses.replace(
            train_config(recipe, args.preset),
            ts=args.ts,
            steps=args.steps,
            warmup=args.warmup,
            seed=args.seed,
            **({"lr": args.lr} if args.lr else {}),
            **_train_keys(args.train),
        )
    except ValueError as e:  # a bad pair, or TrainConfig's own check of a value
        print(f"error: --train: {e}", file=sys.stderr)
        return 2
    base = build_model(args.preset, training=True)
    if args.detail and base.detail_encoder is not None:
        print(
            f"error: --detail {args.detail}: {args.preset}'s base has a detail path "
            f"({base.preset.detail} channels) already; leave --detail out to train on with it",
            file=sys.stderr,
        )
        return 2
    base.load_state_dict(pretrained.load_state(args.preset), strict=True)
    torch.manual_seed(tc.seed)
    model = base if args.depth == base.preset.depth else grow(base, args.depth, training=True)
    if args.mask_channels:
        widen_mask_features(model, args.mask_channels)
    if args.detail:
        add_detail(model, args.detail)
    if args.context:
        add_context(model, args.context)
    if args.refine:
        add_refine(model, args.refine)
    changes = [f"{args.depth} blocks"] if args.depth != base.preset.depth else []
    changes += [f"{args.mask_channels} mask features"] if args.mask_channels else []
    changes += [f"detail {args.detail}"] if args.detail else []
    changes += [f"refine {args.refine} (masks at T/2)"] if args.refine else []
    changes += [f"context {args.context}"] if args.context else []
    changes += args.train
    label = f"{args.preset} ({', '.join(changes) or 'as it is'})"
    data = data_config(recipe, args.data_root)
    dataset = data.build("train")
    out = Path(args.out)
    start = time.time()

    def report(step: int, values: dict) -> None:
        if step % 500 == 0 or step == tc.steps:
            print(f"{label} step {step}/{tc.steps} {values}", flush=True)

    train(model, dataset, tc, out, on_step=report)
    figures = validate(model, recipe, data, label)
    record = {"train": dataclasses.asdict(tc), "depth": args.depth, "validation": figures,
              "mask_channels": args.mask_channels, "detail": args.detail,
              "refine": args.refine, "context": args.context}  # fmt: skip
    (out / "validation.json").write_text(json.dumps({**record, "wall_s": time.time() - start}))
    for ts, f in figures.items():
        print(f"ts {ts}: " + ", ".join(f"{k} {f[k]:.3f}" for k in (NOC90, NOF90, MIOU1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
