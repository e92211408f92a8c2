"""Latency measurement of interactive segmenters (eval-protocol E).

``sat_latency`` is SegNext's "segment anything task" latency: encode one image once, then decode
16 x 16 = 256 single positive clicks at the centres of a regular grid over the input canvas, one
prompt at a time with no previous mask, wall clock end to end. Unlike SegNext's notebook (one run,
no warm-up) we warm up once and synchronize CUDA, so numbers are comparable across runs on the same
device; compare only timings taken on the same device.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hrsam.models.predictor import Predictor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def sat_latency(
    model, image: np.ndarray, ts: int = 1024, points_per_side: int = 16, warmup: int = 1
) -> dict[str, float]:
    """SAT latency of ``model`` on one (H, W, 3) image at target size ``ts``.

    Returns:
        ``sat_s`` (encoder + all grid prompts, seconds), ``encoder_ms`` and ``decoder_ms``
        (median per prompt).
    """
    predictor = Predictor(model, ts)
    device = predictor.device
    cell = ts / points_per_side
    centres = (np.arange(points_per_side) + 0.5) * cell
    prompts = [
        torch.tensor([[[x, y]]], dtype=torch.float32, device=device)
        for y in centres
        for x in centres
    ]  # (x, y) on the ts canvas
    label = torch.ones(1, 1, dtype=torch.long, device=device)

    def run() -> tuple[float, list[float]]:
        start = time.perf_counter()
        predictor.set_image(image)
        _sync(device)
        enc = time.perf_counter() - start
        times = []
        for p in prompts:
            t0 = time.perf_counter()
            model.decode(predictor.embedding, p, label, None)
            _sync(device)
            times.append(time.perf_counter() - t0)
        return enc, times

    for _ in range(warmup):
        run()
    enc, times = run()
    return {
        "sat_s": enc + sum(times),
        "encoder_ms": enc * 1e3,
        "decoder_ms": float(np.median(times)) * 1e3,
    }


def _attention_macs(pattern: str, grids, dim: int, window_size: int, shifted: bool) -> float:
    """Multiply-accumulates of QK^T and PV for one attention layer (all heads)."""
    from hrsam.attention.windows import padded_shape, window_plan

    if pattern == "global":
        return sum(2.0 * (h * w) ** 2 * dim for h, w in grids)
    s = window_size**2
    if pattern == "shifted_kv":
        queries = sum(h * w for h, w in grids)
    elif pattern == "swin":
        queries = sum(
            padded_shape(g, window_size, False)[1] * padded_shape(g, window_size, False)[2]
            for g in grids
        )
    else:  # window, shifted_pad: every slot is a query
        queries = window_plan(grids, window_size, shifted and pattern != "window").num_slots
    return 2.0 * queries * s * dim


def encoder_flops(preset, ts: int) -> float:
    """FLOPs (2 x MACs) of one image encoder forward at ``ts`` x ``ts``, counted analytically from
    a `ModelPreset` (linear layers, attention products, scans, neck; norms and activations are
    left out)."""
    p = preset
    c, g = p.embed_dim, ts // 16
    grids = [(g, g)] + [(s // 16, s // 16) for s in p.anchor_sizes]
    tokens = sum(h * w for h, w in grids)
    macs = tokens * c * 3 * 16 * 16  # patch embedding
    for i in range(p.depth):
        macs += tokens * c * (3 * c + c + 2 * 4 * c)  # qkv, proj, MLP
        if p.family == "sam":
            ws = p.window_size
            if p.attention == "global" and i in p.global_attn_indexes:
                macs += 2.0 * tokens**2 * c + 2.0 * tokens * (2 * g) * c  # + rel-pos bias
            else:
                slots = (-(-g // ws) * ws) ** 2
                macs += 2.0 * slots * ws * ws * c + 2.0 * slots * 2 * ws * c
        else:
            macs += _attention_macs(p.attention, grids, c, p.window_size, i % 2 == 1)
    if p.family == "sam":
        macs += tokens * c * p.out_dim + tokens * p.out_dim * p.out_dim * 9
    else:
        n, r = p.state_dim, p.cycle_repeats
        scan = tokens * c * (2 * c + (c + 2 * n) + c) + 3 * r * tokens * c * n
        n_scans = 0 if p.scan == "none" else len(p.ssm_indexes) * (2 if p.anchor_sizes else 1)
        macs += n_scans * scan
        width = c * len(grids)
        macs += len(p.out_indexes) * g * g * width * p.out_dim + g * g * p.out_dim * 9
    return 2.0 * macs
