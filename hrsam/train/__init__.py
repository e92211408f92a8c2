"""Training: interactive training with simulated clicks, SAM-style distillation, the optimizer
(layer-wise LR decay) and schedule, and exact resume (HRSAM spec B)."""

from hrsam.train.loop import TrainConfig, prepare, simulate_clicks, train
from hrsam.train.losses import normalized_focal_loss
from hrsam.train.optim import layer_id, lr_scale, make_optimizer, param_groups, warmup_poly

__all__ = [
    "TrainConfig",
    "layer_id",
    "lr_scale",
    "make_optimizer",
    "normalized_focal_loss",
    "param_groups",
    "prepare",
    "simulate_clicks",
    "train",
    "warmup_poly",
]
