"""How well can any mask at the decoder's resolution (ts/4) fit each object at all?

    python -m benchmarks.mask_ceiling data.root=data/synthetic_tiny data.size=512 \\
        data.n_train=256 ts=512,1024,2048

SAM-style decoders predict logits at ts/4, which evaluation upsamples bilinearly and thresholds
at 0. For each val object this puts the ground truth through the evaluation's own geometry
(`Predictor.to_canvas`: pad to 32, keep-ratio resize, pad to ts), takes the object fraction of
every ts/4 cell (area pooling) minus 0.5 as the logits, maps them back with
`Predictor.postprocess` and reports the IoU with the ground truth. It is the IoU of an ideal
low-resolution mask, not a strict bound (a learned map can be slightly sharper), and tells
whether a NoC target at some IoU is reachable at that ts: an object whose ceiling is 0.91 needs
99% of it for 0.9.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hrsam import cli
from hrsam.interactive.metrics import iou
from hrsam.models import Predictor

KEYS = {
    **cli.DATA_KEYS,
    "ts": (str, "comma-separated target sizes"),
    "out": (str, "markdown file to write (default: print only)"),
}
DEFAULTS = {**cli.data_defaults(), "ts": "512,1024,2048"}


def ceiling(gt: np.ndarray, ts: int) -> float:
    """IoU of the ideal ts/4 logit map of ``gt`` (H, W) bool after the evaluation's upsampling."""
    p = Predictor(None, ts)
    return iou(p.postprocess(p.ideal_logits(gt))[0, 0].numpy() > 0, np.asarray(gt, bool))


def run(cfg: dict) -> int:
    from hrsam.data import DatasetError

    try:
        sizes = [int(s) for s in str(cfg["ts"]).split(",")]
    except ValueError:
        raise cli.UsageError(f"ts={cfg['ts']!r} must be comma-separated integers") from None
    for s in sizes:
        if s < 16 or s % 16:
            raise cli.UsageError(f"ts={s} must be a positive multiple of 16")
    try:
        data = cli.data_config(cfg).build("val")
    except (DatasetError, ValueError) as e:
        raise cli.UsageError(str(e).splitlines()[0]) from None
    bar = cli.Progress(len(data), "obj")
    rows = []
    for i, sample in enumerate(data, 1):
        rows.append([sample.name, *(ceiling(sample.gt, s) for s in sizes)])
        bar(i, sample.name)
    head = "| object | " + " | ".join(f"ts {s} (mask {s // 4})" for s in sizes) + " |"
    lines = [head, "|---" * (len(sizes) + 1) + "|"]
    lines += [f"| {r[0]} | " + " | ".join(f"{v:.3f}" for v in r[1:]) + " |" for r in rows]
    cols = np.array([r[1:] for r in rows]).T
    lines.append("| mean | " + " | ".join(f"{c.mean():.3f}" for c in cols) + " |")
    for thr in (0.9, 0.92, 0.95):
        counts = " | ".join(str(int((c < thr).sum())) for c in cols)
        lines.append(f"| objects below {thr} | {counts} |")
    text = "\n".join(lines)
    print(text)
    if cfg.get("out"):
        Path(cfg["out"]).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, __doc__, KEYS, DEFAULTS, run)


if __name__ == "__main__":
    sys.exit(main())
