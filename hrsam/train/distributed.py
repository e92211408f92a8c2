"""Data parallel training: one process per device, started by torchrun or as a multi-task
submitit job (local or SLURM). Both arrive here as the same ``env://`` process group.

Gradients are averaged with one flattened all-reduce after the local backward passes (the model
is called through ``encode``/``decode``, not ``forward``, so DistributedDataParallel's forward
hooks would not see it). Parameters that got no gradient this step contribute zeros, so every
rank issues the same collective. Rank 0 writes checkpoints and prints progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def from_env() -> DistEnv:
    """The process's place in the job: torchrun's RANK/WORLD_SIZE/LOCAL_RANK, or a submitit job
    with several tasks (whose rendezvous variables are exported here); else a single process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if env.get("SUBMITIT_EXECUTOR") in ("local", "slurm"):
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            d = submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False
            )
            return DistEnv(d.rank, d.world_size, d.local_rank)
    return DistEnv()


DEFAULT_TIMEOUT_MIN = 60.0


def init(device_type: str, timeout_min: float | None = None) -> DistEnv:
    """Joins the process group (NCCL on CUDA, Gloo on CPU) when the job has several processes.

    ``timeout_min`` bounds the rendezvous and every collective (default
    ``$HRSAM_DIST_TIMEOUT_MIN``, else 60; NCCL's own default of 10 minutes kills jobs whose rank 0
    prepares data for longer)."""
    d = from_env()
    if d.active and not dist.is_initialized():
        if timeout_min is None:
            timeout_min = float(os.environ.get("HRSAM_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
        if device_type == "cuda":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(
            "nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=timeout_min)
        )
    return d


def current() -> DistEnv:
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistEnv()


def share(obj):
    """Rank 0's ``obj`` on every rank (a barrier too)."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current().active:
        dist.barrier()


def broadcast_parameters(model: nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if current().active:
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(model: nn.Module) -> None:
    """grad <- mean over ranks, in one flattened all-reduce. A parameter keeps ``grad = None``
    only if no rank produced a gradient for it (so AdamW skips it exactly as a single process
    would)."""
    d = current()
    if not d.active:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype)
    flat = torch.cat([*(g.reshape(-1) for g in grads), has.to(grads[0].device)])
    dist.all_reduce(flat)
    flat /= d.world_size
    offset = 0
    for i, p in enumerate(params):
        n = p.numel()
        used = bool(flat[flat.numel() - len(params) + i] > 0)
        p.grad = flat[offset : offset + n].view_as(p).clone() if used else None
        offset += n


def mean(value: float, device: torch.device) -> float:
    """The mean of a scalar over ranks (for logging)."""
    d = current()
    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
