"""Where a model's masks are wrong once the clicks stop helping: near the outline or away from it.

    python -m benchmarks.error_bands hrsam_tiny --data-root data/synthetic_3e-4 --limit 40
    python -m benchmarks.error_bands hrsam_tiny --state outputs/detail/hrsam_tiny/last.pt \\
        --detail 16 --data-root data/synthetic_3e-4
    python -m benchmarks.error_bands hrsam_tiny --state outputs/refine/hrsam_tiny/last.pt \\
        --refine 16 --data-root data/synthetic_3e-4

Runs the evaluation's click loop (hrsam protocol) on the recipe's val objects and, after the last
click, counts the wrong pixels by their distance to the object's outline in native pixels (within
4, 8, 16 px, beyond), beside the same counts for the ideal ts/4 mask (`benchmarks.mask_ceiling`'s:
the best any mask at the decoder's resolution holds). It prints how many objects stop below IoU
0.90 and how many would reach it if the errors within 4 or 8 px of the outline were gone: when
that number is small, the outline's precision, not the clicks, holds NoF90.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

BANDS = (4, 8, 16)  # native pixels from the outline
THR = 0.9


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.error_bands", description=__doc__)
    p.add_argument("preset", help="a preset with a committed base (hrsam/pretrained/)")
    p.add_argument(
        "--state", default=None, help="weights instead of the base: a training state (last.pt) "
        "or a .safetensors file",
    )  # fmt: skip
    p.add_argument(
        "--detail", type=int, default=None,
        help="the state's detail channels (0: none; default: the preset's)",
    )  # fmt: skip
    p.add_argument(
        "--refine", type=int, default=0,
        help="the state's T/2 refine channels (hrsam.models.detail.add_refine; default 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--context", type=int, default=None,
        help="the state's context blocks (hrsam.models.detail.add_context; default: the preset's)",
    )  # fmt: skip
    p.add_argument("--ts", type=int, default=512)
    p.add_argument("--clicks", type=int, default=20)
    p.add_argument("--limit", type=int, default=0, help="the first N val objects (0: all)")
    p.add_argument("--data-root", default=None, help="the recipe's scenes (default: its root)")
    p.add_argument("--recipe", default=None, help="pretraining recipe (default: the committed)")
    p.add_argument("--out", default=None, help="folder for the IoU matrix and clicks (csv)")
    return p


def outline_distance(gt: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel of the other side of ``gt``'s outline."""
    from scipy import ndimage

    return np.where(gt, ndimage.distance_transform_edt(gt), ndimage.distance_transform_edt(~gt))


def band_errors(pred: np.ndarray, gt: np.ndarray, dist: np.ndarray) -> list[int]:
    """Wrong pixels within each of `BANDS` px of the outline, then all of them."""
    wrong = pred != gt
    return [int((wrong & (dist <= b)).sum()) for b in BANDS] + [int(wrong.sum())]


def iou_without(pred: np.ndarray, gt: np.ndarray, dist: np.ndarray, band: float) -> float:
    """The IoU with every error within ``band`` px of the outline corrected."""
    from hrsam.interactive.metrics import iou

    near = dist <= band
    return iou(np.where(near, gt, pred), gt)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from ablations.pretrain import RECIPE, data_config, load_recipe
    from hrsam import cli, names, pretrained
    from hrsam.interactive.evaluate import EvalResult, click_loop
    from hrsam.interactive.metrics import iou
    from hrsam.models import Predictor, build_model

    recipe = load_recipe(args.recipe or RECIPE)
    torch.set_num_threads(recipe["threads"])
    sizes = {"refine": args.refine, **({} if args.detail is None else {"detail": args.detail})}
    sizes.update({} if args.context is None else {"context": args.context})
    model = build_model(args.preset, **sizes)
    if args.state and args.state.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(args.state)
    elif args.state:
        state = torch.load(args.state, map_location="cpu", weights_only=True)["state_dict"]
    else:
        state = pretrained.load_state(args.preset)
    model.load_state_dict(state, strict=True)
    model.eval()
    val = data_config(recipe, args.data_root).build("val")
    n = min(len(val), args.limit or len(val))
    predictor = Predictor(model, args.ts)
    result = EvalResult("hrsam", args.ts, args.clicks)
    rng = np.random.default_rng(42)
    bar = cli.Progress(n, "obj")
    rows = []  # iou, iou without 4 / 8 px errors, model band errors, ideal band errors
    curves, keep = [], (args.clicks,)
    for i in range(n):
        sample = val[i]
        gt = np.asarray(sample.gt, bool)
        with torch.no_grad():
            predictor.set_image(sample.image)
            curve, clicks, kept = click_loop(predictor, gt, None, rng, result, "fp32", keep)
            ideal = predictor.postprocess(predictor.ideal_logits(gt))[0, 0].numpy() > 0
        pred, dist = kept[args.clicks], outline_distance(gt)
        fixed = [iou_without(pred, gt, dist, b) for b in BANDS[:2]]
        rows.append((curve[-1], *fixed, band_errors(pred, gt, dist), band_errors(ideal, gt, dist),
                     iou(ideal, gt)))  # fmt: skip
        curves.append(curve)
        result.names.append(sample.name)
        result.clicks.append(clicks)
        bar(i + 1, sample.name)
    result.ious = np.array(curves, dtype=np.float64)
    final = result.ious[:, -1]
    model_err, ideal_err = (np.array([r[k] for r in rows], float) for k in (3, 4))
    print(f"{args.preset} ({args.state or 'committed base'}), ts {args.ts}, {args.clicks} clicks, "
          f"{n} val objects")  # fmt: skip
    below = [int((final < THR).sum())] + [sum(r[k] < THR for r in rows) for k in (1, 2, 5)]
    print(f"below IoU {THR} after the last click: {below[0]}; with the errors within 4 px of the "
          f"outline corrected: {below[1]}; within 8 px: {below[2]}; the ideal ts/4 mask: "
          f"{below[3]}")  # fmt: skip
    head = "| mask | wrong px per object | " + " | ".join(f"within {b} px" for b in BANDS) + " |"
    print(head + "\n|---|---|" + "---|" * len(BANDS))
    for label, err in (("model", model_err), ("ideal ts/4", ideal_err)):
        share = " | ".join(f"{err[:, j].sum() / err[:, -1].sum():.0%}" for j in range(len(BANDS)))
        print(f"| {label} | {err[:, -1].mean():.0f} | {share} |")
    shown = (names.NOC85, names.NOC90, names.NOF90, names.MIOU1, names.MIOU5, names.BIOU)
    shown += (names.miou_at(args.clicks),)
    summary = result.summary()
    print(", ".join(f"{k} {summary[k]:.3f}" for k in shown if k in summary))
    if args.out:
        result.write_csv(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
