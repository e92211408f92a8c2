"""A trial's model on its validation objects: loaded with the resolved kernel and scan backend,
timed by the warm fixed-input benchmark (`hrsam.profiling.measure`), evaluated interactively
(`hrsam.interactive.evaluate`); the metrics under their `hrsam.names`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ablations.resolve import Resolved, check_support
from hrsam import names

log = logging.getLogger("ablations.evaluation")
GALLERY_OBJECTS = 4  # the first validation objects every trial keeps for the report's gallery


def load(resolved: Resolved, checkpoint: str | Path | None) -> torch.nn.Module:
    """The trial's model on its device in eval mode: a trained checkpoint (ours: it records its
    own architecture) or the requested preset with ``model.checkpoint`` (None: random weights),
    with the resolved kernel and scan backend. `UnsupportedError` when the loaded model's own
    kernel or backend cannot run here."""
    from hrsam.models import load_checkpoint, load_model

    p = resolved.preset
    compute = {"kernel": p.kernel, **({"scan": p.scan} if resolved.hrsam else {})}
    spec = resolved.spec
    if spec.train is not None:
        model = load_checkpoint(checkpoint, **compute)
    else:
        model = load_model(spec.model.preset, checkpoint, **spec.model.arch, **compute)
        if not checkpoint:
            log.warning("no checkpoint for %s: evaluating random weights", spec.model.preset)
    check_support(resolved, model.preset)
    return model.to(resolved.device).eval()


def benchmark(resolved: Resolved, model, dataset, progress: Callable) -> dict[str, float]:
    """The warm fixed-input benchmark at ``bench.ts`` (the plan has settled it: `spec.bench_ts`)
    on the first validation image: encoder, decoder, SAT latency, peak memory, parameters,
    GFLOPs."""
    from hrsam.profiling import measure

    b = resolved.spec.bench
    ts = b.ts
    progress(f"benchmark at ts {ts}", force=True)
    return measure(
        model,
        dataset[0].image,
        ts,
        reps=b.reps,
        sat_points=b.sat_points,
        precision=resolved.precision,
    )


def evaluate(resolved: Resolved, model, dataset, progress: Callable, series=None):
    """The interactive evaluation (`hrsam.interactive.evaluate`): every object, every click."""
    from hrsam.interactive import evaluate as run

    ev, seed = resolved.spec.eval, resolved.spec.seed
    with torch.no_grad():
        return run(
            model,
            dataset,
            ev.protocol,
            ev.ts,
            ev.max_clicks,
            seed,
            progress=lambda i, n, name: (
                progress(f"evaluate {i}/{n}"),
                series and series(i, {names.EVAL_OBJECTS_DONE: i}),
            ),
            precision=resolved.precision,
            gallery=GALLERY_OBJECTS,
        )


def metrics(result) -> tuple[dict[str, float], list[float]]:
    """An evaluation's record metrics (its timings under their ``eval_`` names, mIoU after every
    click) and its mIoU curve."""
    out = {names.eval_timing(k): v for k, v in result.summary().items()}
    curve = [float(v) for v in result.ious.mean(axis=0)]
    out.update({names.miou_at(k): v for k, v in enumerate(curve, start=1)})
    return out, curve
