"""Evaluate a model interactively: ``python -m hrsam.evaluate key=value ...``

    python -m hrsam.evaluate model=hrsam_tiny data.name=synthetic data.root=data/synthetic ts=512
    python -m hrsam.evaluate model=hrsam_vit_b checkpoint=hrsam.pth data.name=davis \\
        data.root=data/DAVIS ts=2048 protocol=hrsam

Prints NoC85/90/95, NoF95, mIoU@1/5, BIoU and latency with a progress line per object, and saves
the IoU matrix (``ious.csv``) and the clicks (``clicks.csv``) under ``out``. Bad input is one line
naming the value and the valid choices, exit code 2.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch

from hrsam import cli, names
from hrsam.cli import UsageError
from hrsam.interactive.evaluate import EvalConfig

KEYS = {
    "model": (str, "preset name (hrsam_tiny, hrsam_vit_b, sam_vit_b, ...)"),
    "checkpoint": (str, "weights: our checkpoint, an official SAM or HRSAM .pth"),
    **cli.DATA_KEYS,
    "data.split": (str, "synthetic split"),
    "ts": (int, "target size, a multiple of 16"),
    "protocol": (str, "click protocol: hrsam or ritm"),
    "max_clicks": (int, "clicks per object"),
    "seed": (int, "seed of hrsam's random tie-break (42)"),
    "kernel": (str, "attention kernel override"),
    "device": (str, "cpu, cuda or cuda:<index>"),
    "precision": (str, "fp32, bf16 or fp16 (autocast)"),
    "tf32": (bool, "TF32 float32 matmuls on CUDA (recorded)"),
    "out": (str, "results folder (outputs/evaluate/<model>_<data>_<ts>)"),
}
DEFAULTS = {  # data.* and the evaluation settings: their dataclasses' defaults
    "model": "hrsam_tiny",
    **cli.data_defaults(),
    "data.split": "val",
    **asdict(EvalConfig()),
    "seed": 42,
    "device": "cpu",
    "precision": "fp32",
    "tf32": False,
}


def parse(argv: list[str]) -> dict:
    return cli.parse(argv, KEYS, DEFAULTS)


def run(cfg: dict) -> dict:
    from hrsam.data import DatasetError
    from hrsam.interactive import evaluate
    from hrsam.models import CheckpointError, load_model
    from hrsam.precision import check_precision, dtype, set_tf32

    try:
        EvalConfig(cfg["protocol"], cfg["ts"], cfg["max_clicks"])  # checks all three
        check_precision(cfg["precision"])
        device = _device(cfg["device"])
        overrides = {"kernel": cfg["kernel"]} if cfg.get("kernel") else {}
        where = {"device": device, "dtype": dtype(cfg["precision"])}  # picks kernel auto's
        model = load_model(cfg["model"], cfg.get("checkpoint"), **where, **overrides)
        dataset = cli.data_config(cfg).build(cfg["data.split"])
    except (CheckpointError, DatasetError) as e:
        raise UsageError(str(e)) from None
    except ValueError as e:  # unknown preset / kernel / protocol / dataset name
        raise UsageError(str(e).splitlines()[0]) from None
    set_tf32(cfg["tf32"])
    model.to(device).eval()
    bar = cli.Progress(len(dataset), "obj")
    with torch.no_grad():
        result = evaluate(
            model,
            dataset,
            cfg["protocol"],
            cfg["ts"],
            cfg["max_clicks"],
            cfg["seed"],
            progress=lambda i, n, name: bar(i, name),
            precision=cfg["precision"],
        )
    summary = result.summary()
    out = Path(cfg.get("out") or f"outputs/evaluate/{cfg['model']}_{cfg['data.name']}_{cfg['ts']}")
    result.write_csv(out)
    summary["out"] = str(out)
    return summary


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name!r} must be cpu, cuda or cuda:<index>") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device={name!r} must be cpu, cuda or cuda:<index>")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda but CUDA is not available on this machine; use device=cpu")
    return device


def format_table(cfg: dict, s: dict) -> str:
    cols = [
        ("NoC85", names.NOC85, 2),
        ("NoC90", names.NOC90, 2),
        ("NoC95", names.NOC95, 2),
        ("NoF95", names.NOF95, 0),
        ("mIoU@1", names.MIOU1, 4),
        ("mIoU@5", names.MIOU5, 4),
        ("BIoU", names.BIOU, 4),
        ("enc ms", names.ENCODER_MS, 1),
        ("dec ms", names.DECODER_MS, 1),
    ]
    head = "| model | data | ts | protocol | precision | " + " | ".join(c[0] for c in cols) + " |"
    vals = [f"{s[k]:.{nd}f}" if k in s else "-" for _, k, nd in cols]
    row = (
        f"| {cfg['model']} | {cfg['data.name']} | {cfg['ts']} | {cfg['protocol']} | "
        f"{cfg.get('precision', 'fp32')} | " + " | ".join(vals) + " |"
    )
    return "\n".join([head, "|" + "---|" * (5 + len(cols)), row])


def _main(cfg: dict) -> int:
    summary = run(cfg)
    print(format_table(cfg, summary))
    print(f"IoU matrix and clicks: {summary['out']}/ious.csv, clicks.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, __doc__, KEYS, DEFAULTS, _main)


if __name__ == "__main__":
    sys.exit(main())
