"""Train a model: ``python -m hrsam.train key=value ...``

    python -m hrsam.train recipe=tiny-synthetic out=outputs/train/tiny
    python -m hrsam.train preset=hrsam_vit_b recipe=interactive data.name=synthetic \\
        data.root=data/synthetic steps=40000 ts=1024 out=outputs/train/hrsam
    python -m hrsam.train preset=hrsam_vit_b recipe=distill teacher=sam_vit_h \\
        teacher.checkpoint=sam_vit_h_4b8939.pth data.name=synthetic data.root=data/synthetic

Recipes: ``interactive`` (simulated clicks, normalized focal loss, uniform AdamW), ``distill``
(MSE to a teacher's embeddings, computed once to ``out/teacher/``; layer-wise LR decay 0.9) and
``tiny-synthetic`` (``hrsam_tiny`` on the synthetic dataset at ts 512, sized for a 2-core CPU).
A run resumes from ``out/last.pt`` when it exists. Bad input fails before any work: one line,
exit code 2.

Data parallel: start it under torchrun (``torchrun --nproc_per_node 4 -m hrsam.train ...``) or
as a submitit job with several tasks; each process trains ``batch`` images per step on its own
device (``cuda:<local rank>``; Gloo on CPU) and gradients are averaged, so the global batch is
``batch`` x processes.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from hrsam import cli
from hrsam.cli import UsageError
from hrsam.precision import dtype
from hrsam.train.loop import TrainConfig, training_precision

KEYS = {
    "preset": (str, "model preset"),
    "recipe": (str, "interactive, distill or tiny-synthetic"),
    "checkpoint": (str, "initial weights (ours, or official SAM / HRSAM)"),
    **cli.DATA_KEYS,
    "steps": (int, "optimizer steps"),
    "ts": (int, "training canvas, a multiple of 16"),
    "batch": (int, "images per step"),
    "lr": (float, "peak learning rate"),
    "warmup": (int, "linear warm-up steps"),
    "seed": (int, "seed"),
    "gamma": (float, "interactive: P(n extra click rounds) ~ gamma^n"),
    "max_clicks": (int, "interactive: the most click rounds after the first click"),
    "inner_k": (float, "interactive: training clicker's candidate ratio (1.0: the evaluation's)"),
    "mask_rounds": (int, "interactive: rounds that add no click, only the previous mask"),
    "protocol": (str, "interactive: the rounds' clicker, hrsam or ritm"),
    "loss": (str, "interactive: nfl (normalized focal, B.4) or bce_dice"),
    "loss_rounds": (str, "interactive: loss on the last click round (B.3) or on all (SAM)"),
    "ckpt_every": (int, "checkpoint every N steps (0: at the end)"),
    "teacher": (str, "distill: teacher preset"),
    "teacher.checkpoint": (str, "distill: teacher weights"),
    "kernel": (str, "attention kernel override"),
    "scan": (str, "scan backend override"),
    "device": (str, "cpu or cuda"),
    "precision": (str, "fp32, bf16 or fp16 (autocast; default: bf16 on CUDA, fp32 on CPU)"),
    "tf32": (bool, "TF32 float32 matmuls on CUDA (recorded; default off)"),
    "dist_timeout_min": (float, "process-group timeout in minutes (NCCL's default is 10)"),
    "out": (str, "output folder"),
}
RECIPES = {
    "interactive": {},
    "distill": {"layer_decay": 0.9, "flip": False},
    "tiny-synthetic": {},
}
TINY = {  # measured: benchmarks/results/cpu/train_tiny.md
    "preset": "hrsam_tiny",
    "data.name": "synthetic",
    "data.root": "data/synthetic_tiny",  # its own folder: 256 training images
    "data.size": 512,
    "data.n_train": 256,
    "steps": 3000,
    "ts": 512,
    "lr": 1e-3,
    "warmup": 50,
    "batch": 1,
}
# command-line key -> TrainConfig field (the keys' defaults are the fields')
TRAIN_FIELDS = {
    "steps": "steps",
    "ts": "ts",
    "batch": "batch_size",
    "lr": "lr",
    "warmup": "warmup",
    "seed": "seed",
    "gamma": "gamma",
    "max_clicks": "max_clicks",
    "inner_k": "inner_k",
    "mask_rounds": "mask_rounds",
    "protocol": "protocol",
    "loss": "loss",
    "loss_rounds": "loss_rounds",
    "ckpt_every": "ckpt_every",
    "precision": "precision",
}
DEFAULTS = {
    "recipe": "interactive",
    **cli.data_defaults(),
    **{key: getattr(TrainConfig, f) for key, f in TRAIN_FIELDS.items()},
    "device": "cuda" if torch.cuda.is_available() else "cpu",
    "tf32": False,
    "dist_timeout_min": 60.0,
}


class TeacherCache:
    """Teacher embeddings computed once per (teacher, weights, ts, dataset) to .npy files."""

    def __init__(self, teacher, dataset, ts: int, folder: Path, key: str) -> None:
        self.teacher, self.dataset, self.ts = teacher, dataset, ts
        self.folder = folder / hashlib.sha256(key.encode()).hexdigest()[:12]

    def fill(self) -> None:
        from hrsam.train.loop import prepare

        self.folder.mkdir(parents=True, exist_ok=True)
        todo = [i for i in range(len(self.dataset)) if not (self.folder / f"{i}.npy").exists()]
        bar = cli.Progress(len(todo), "img")
        device = next(self.teacher.parameters()).device
        for n, i in enumerate(todo, 1):
            s = self.dataset[i]
            image, _ = prepare(
                s.image, s.gt, self.ts, False, lambda x: self.teacher.normalize(x.to(device))
            )
            with torch.no_grad():
                emb = self.teacher.image_encoder(image)  # the backbone's: no detail path
            tmp = self.folder / f"{i}.tmp.npy"
            np.save(tmp, emb.float().cpu().numpy())
            tmp.replace(self.folder / f"{i}.npy")
            bar(n, f"teacher embedding {i}")

    def __call__(self, index: int, image):
        return torch.from_numpy(np.load(self.folder / f"{index}.npy"))


def build(cfg: dict):
    """Validates everything and builds model, dataset, teacher and TrainConfig (no training)."""
    from hrsam.data import DatasetError
    from hrsam.models import CheckpointError, load_model

    if cfg["recipe"] not in RECIPES:
        raise UsageError(f"unknown recipe {cfg['recipe']!r}; valid: {', '.join(RECIPES)}")
    if "preset" not in cfg:
        raise UsageError(
            "preset is required (e.g. preset=hrsam_tiny), or use recipe=tiny-synthetic"
        )
    extra = RECIPES[cfg["recipe"]]
    recipe = "distill" if cfg["recipe"] == "distill" else "interactive"
    try:
        fields = {f: cfg[key] for key, f in TRAIN_FIELDS.items()}
        train_cfg = TrainConfig(recipe=recipe, **fields, **extra)
        device = torch.device(cfg["device"])  # checked by run() before joining a process group
        overrides = {k: cfg[k] for k in ("kernel", "scan") if cfg.get(k)}
        torch.manual_seed(cfg["seed"])  # the same initial weights in every run with this seed
        # where it trains, in its precision: picks the kernel `auto` resolves to
        where = {"device": device, "dtype": dtype(training_precision(train_cfg, device))}
        model = load_model(cfg["preset"], cfg.get("checkpoint"), **where, **overrides)
        model = model.to(device)
        teacher = None
        if recipe == "distill":
            if not cfg.get("teacher"):
                raise UsageError("recipe=distill needs teacher=<preset> (and teacher.checkpoint)")
            t = (
                load_model(cfg["teacher"], cfg.get("teacher.checkpoint"), **where, **overrides)
                .to(device)
                .eval()
            )
            probe = torch.zeros(1, 3, 32, 32, device=device)
            with torch.no_grad():
                dims = (t.image_encoder(probe).shape[1], model.image_encoder(probe).shape[1])
            if dims[0] != dims[1]:
                raise UsageError(
                    f"teacher {cfg['teacher']} embeds {dims[0]} channels but student "
                    f"{cfg['preset']} embeds {dims[1]}; pick a matching teacher"
                )
            key = f"{cfg['teacher']}|{cfg.get('teacher.checkpoint')}|{cfg['ts']}|{cfg['data.root']}"
            teacher = (t, key)
        dataset = cli.data_config(cfg).build("train")
        if teacher is not None:
            teacher = TeacherCache(
                teacher[0], dataset, cfg["ts"], Path(cfg["out"]) / "teacher", teacher[1]
            )
    except (CheckpointError, DatasetError) as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    return model, dataset, teacher, train_cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        cli.print_help(__doc__, KEYS, DEFAULTS)
        return 0
    try:
        cfg = cli.parse(argv, KEYS, DEFAULTS)
        if cfg["recipe"] == "tiny-synthetic":
            cfg = cli.parse(argv, KEYS, {**DEFAULTS, **TINY, "recipe": "tiny-synthetic"})
        cfg.setdefault("out", f"outputs/train/{cfg.get('preset', 'model')}_{cfg['recipe']}")
        return run(cfg)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(cfg: dict) -> int:
    """Builds and trains. In a process group rank 0 builds first (it may generate the dataset
    and the teacher embeddings) BEFORE joining the group, so the others wait in the rendezvous
    (bounded by ``dist_timeout_min``), never inside a collective with NCCL's 10-minute timeout;
    then they build from what rank 0 wrote."""
    from hrsam.precision import set_tf32
    from hrsam.train import distributed
    from hrsam.train.loop import train

    device_type = torch.device(cfg["device"]).type
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda but CUDA is not available on this machine; use device=cpu")
    if cfg["dist_timeout_min"] <= 0:
        raise UsageError(f"dist_timeout_min={cfg['dist_timeout_min']} must be > 0")
    set_tf32(cfg["tf32"])
    d = distributed.from_env()
    if d.active and device_type == "cuda":
        cfg = {**cfg, "device": f"cuda:{d.local_rank}"}
    error = None
    if d.is_main:
        try:
            model, dataset, teacher, train_cfg = build(cfg)
            if teacher is not None:
                teacher.fill()
        except UsageError as e:
            error = str(e)
    distributed.init(device_type, cfg["dist_timeout_min"])
    try:
        error = distributed.share(error)  # the other ranks stop on rank 0's bad input too
        if error is not None:
            raise UsageError(error)
        if not d.is_main:
            model, dataset, teacher, train_cfg = build(cfg)
        bar = cli.Progress(train_cfg.steps, "step") if d.is_main else None
        state = train(
            model,
            dataset,
            train_cfg,
            cfg["out"],
            teacher=teacher,
            progress=None if bar is None else lambda step, n, loss: bar(step, f"loss {loss:.4f}"),
        )
    finally:
        distributed.shutdown()
    if not d.is_main:
        return 0
    print(
        f"trained {state.step} steps; last loss {state.losses[-1]:.4f}; "
        f"checkpoint {Path(cfg['out']) / 'last.pt'}"
        + (f" ({d.world_size} processes)" if d.active else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
