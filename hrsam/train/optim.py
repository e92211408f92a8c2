"""Optimizer parameter groups and the learning-rate schedule (HRSAM spec B.1, B.2, B.6)."""

from __future__ import annotations

import re

import torch
from torch import nn

LAYER_DECAY_IGNORE = ("mamba", "pos_embed", "patch_embed")


def layer_id(name: str, num_layers: int) -> int:
    """B.6: pos/patch embedding -> 0, block i -> i + 1, everything else -> num_layers + 1."""
    if name.startswith("image_encoder.pos_embed") or name.startswith("image_encoder.patch_embed"):
        return 0
    m = re.match(r"image_encoder\.blocks\.(\d+)\.", name)
    return int(m.group(1)) + 1 if m else num_layers + 1


def lr_scale(
    name: str, num_layers: int, decay: float, ignore: tuple[str, ...] = LAYER_DECAY_IGNORE
) -> float:
    """decay^(num_layers + 1 - layer id); names containing an ignore key get 1.0."""
    if any(key in name for key in ignore):
        return 1.0
    return decay ** (num_layers + 1 - layer_id(name, num_layers))


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    num_layers: int | None = None,
) -> list[dict]:
    """AdamW groups. With ``layer_decay`` (distillation): per-parameter lr scales of B.6 and no
    weight decay on 1-D parameters and biases. Without (finetuning, as the official configs):
    one group, the same lr and weight decay for every parameter."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if layer_decay is None:
        return [
            {
                "params": [p for _, p in params],
                "lr": lr,
                "weight_decay": weight_decay,
                "lr_scale": 1.0,
            }
        ]
    if num_layers is None:
        num_layers = len(getattr(model.image_encoder, "blocks", []))
    groups: dict[tuple[float, float], dict] = {}
    for name, p in params:
        scale = lr_scale(name, num_layers, layer_decay)
        wd = 0.0 if p.ndim == 1 or name.endswith(".bias") else weight_decay
        g = groups.setdefault(
            (scale, wd), {"params": [], "lr": lr * scale, "weight_decay": wd, "lr_scale": scale}
        )
        g["params"].append(p)
    return list(groups.values())


def warmup_poly(warmup: int, total: int, power: float = 1.0, start: float = 1e-6):
    """LambdaLR factor: linear warm-up from ``start`` over ``warmup`` steps, then poly to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * step / max(1, warmup)
        return max(0.0, 1 - (step - warmup) / max(1, total - warmup)) ** power

    return factor


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    steps: int,
    warmup: int,
    layer_decay: float | None = None,
):
    opt = torch.optim.AdamW(
        param_groups(model, lr, weight_decay, layer_decay), lr=lr, betas=(0.9, 0.999)
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_poly(warmup, steps))
    return opt, sched
