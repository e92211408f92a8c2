"""Precision as a setting: ``fp32``, ``bf16`` or ``fp16`` (issue 18), recorded with every timing.

``fp32`` runs the model as it is; ``bf16`` / ``fp16`` run it under ``torch.autocast`` (matmuls and
attention in half precision, norms and reductions in float32; the scan computes in float32
whatever it is given). TF32 (``tf32``) is a separate, recorded choice: float32 matmuls and
convolutions on Ampere+ tensor cores, off by default so fp32 means IEEE fp32.

`dtype` says which dtype the attention kernels actually receive, so ``support()`` is asked about
the precision that will run.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of `PRECISIONS`; else a ValueError naming value and choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {', '.join(PRECISIONS)}")
    return precision


def dtype(precision: str) -> torch.dtype:
    """The dtype the attention kernels run in under ``precision``."""
    return _DTYPES[check_precision(precision)]


def autocast(device: torch.device | str, precision: str):
    """A context running the enclosed forward in ``precision`` on ``device`` (none for fp32)."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype(precision))


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions (CUDA; a no-op for CPU results)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def tf32_enabled() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)
