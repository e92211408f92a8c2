"""The pretraining's learning-rate search (``python -m ablations.pretrain --search``): per
preset, a short run at each of the recipe's ``search.lrs`` (the pretraining recipe with its
warm-up scaled to the run), each evaluated by mIoU@5 on the validation objects; the best is the
family's rate in ``ablations/conf/pretrain.yaml``. Short runs favour larger rates than a long one
would: the record says so beside its table.

One results file per preset (``<out>/search/<preset>/results.json``: two presets' searches may run
side by side, each on its own core) and the table of all of them (``<out>/search/record.md`` and
``record.json``, copied to ``benchmarks/results/cpu/pretrain_lr_search.*``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ablations.provenance import _cpu_name, git_state
from hrsam import names

ROOT = Path(__file__).resolve().parent.parent
LOSS_EVERY = 100  # the final loss of a run: the mean of its last steps


def search(presets: list[str], recipe: dict, out: Path, uri: str | None, data_root=None) -> dict:
    """Short runs at each of ``search.lrs`` per preset (resumable: one folder per run), each
    evaluated by mIoU@5 at ``search.eval_ts``, and beyond the grid's edge while the best sits
    there (`_rates`); returns {preset: {lr: figures}} and writes the record table."""
    import torch

    from ablations.pretrain import data_config

    torch.set_num_threads(recipe["threads"])
    data = data_config(recipe, data_root)
    dataset, val = data.build("train"), data.build("val")
    results = _read_search(out)
    for preset in presets:
        for lr in _rates(recipe["search"], results.setdefault(preset, {})):
            figures = _one(preset, lr, recipe, dataset, val, out)
            results[preset][f"{lr:g}"] = figures
            print(f"{preset} lr {lr:g}: {json.dumps(figures)}", flush=True)
            _write_search(out, results, recipe, preset)
    return results


EXTEND = 2  # rates tried beyond the grid's edge, one at a time, while the best sits at the edge


def _nice(x: float) -> float:
    """The rate of the 1-3-10 series nearest ``x`` in log space (9.5e-5 -> 1e-4)."""
    e = math.floor(math.log10(x))
    candidates = [m * 10.0**k for k in (e - 1, e, e + 1) for m in (1, 3)]
    return float(f"{min(candidates, key=lambda c: abs(math.log(c / x))):.1g}")


def _rates(s: dict, done: dict):
    """The grid's rates not yet run; then, while the best so far is the smallest (largest)
    rate tried, one step of the grid's ratio below (above) it: `EXTEND` beyond the grid in all,
    over every invocation (a resumed search goes on where it stopped)."""
    yield from (lr for lr in s["lrs"] if f"{lr:g}" not in done)
    lrs = sorted(s["lrs"])
    ratio = lrs[1] / lrs[0] if len(lrs) > 1 else 3.0
    grid = {f"{lr:g}" for lr in lrs}
    while len(done) >= 2 and len(set(done) - grid) < EXTEND:
        tried = sorted(float(k) for k in done)
        best = float(max(done, key=lambda k: done[k][names.MIOU5]))
        if best == tried[0]:
            nxt = _nice(tried[0] / ratio)
        elif best == tried[-1]:
            nxt = _nice(tried[-1] * ratio)
        else:
            return
        if f"{nxt:g}" in done:
            return
        yield nxt
        if f"{nxt:g}" not in done:  # the caller did not run it: nothing new to decide from
            return


def _one(preset: str, lr: float, recipe: dict, dataset, val, out: Path) -> dict:
    """One short run at ``lr`` (resumable in its own folder), evaluated on ``val``."""
    from ablations.pretrain import StepLog, build_seeded, rounded, train_config
    from ablations.pretrain_stages import details, first_detail
    from hrsam.interactive.evaluate import evaluate
    from hrsam.train.loop import train

    s = recipe["search"]
    tc = train_config(recipe, preset, lr=lr, steps=s["steps"])
    model = build_seeded(preset, tc, first_detail(details(recipe)))  # as stage 1 trains it
    logger = StepLog(f"{preset} lr {lr:g}", None)
    logger.total = tc.steps
    t0 = time.perf_counter()
    state = train(model, dataset, tc, out / "search" / preset / f"{lr:g}", on_step=logger)
    train_s = time.perf_counter() - t0
    summary = evaluate(model.eval(), val, ts=s["eval_ts"], max_clicks=s["eval_clicks"]).summary()
    figures = {
        names.MIOU1: summary[names.miou_at(1)],
        names.MIOU5: summary[names.miou_at(5)],
        names.CLICK_GAIN: summary[names.CLICK_GAIN],
        "final_loss": float(np.mean(state.losses[-LOSS_EVERY:])),
        names.TRAIN_S: train_s,
    }
    return {k: rounded(v) for k, v in figures.items()}


def _read_search(out: Path) -> dict:
    """Every preset's search results under ``out/search/<preset>/results.json`` (one file per
    preset: two presets' searches may run side by side)."""
    files = sorted((out / "search").glob("*/results.json"))
    return {f.parent.name: json.loads(f.read_text()) for f in files}


def best_lr(results: dict, preset: str) -> float:
    runs = results[preset]
    return float(max(runs, key=lambda lr: runs[lr][names.MIOU5]))


def _write_search(out: Path, results: dict, recipe: dict, preset: str) -> None:
    path = out / "search" / preset / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results[preset], indent=1))
    results = {**_read_search(out), preset: results[preset]}
    s = recipe["search"]
    lines = [
        "# Pretraining: the learning-rate search",
        "",
        f"`python -m ablations.pretrain --search` ({git_state(ROOT)['git_sha'][:10]}): each family "
        f"trained {s['steps']} steps at each peak rate with the pretraining recipe "
        f"(`ablations/conf/pretrain.yaml`, warm-up scaled to the run), then evaluated on the "
        f"{recipe['data']['n_val']} val scenes' objects at ts {s['eval_ts']} with "
        f"{s['eval_clicks']} clicks; the best mIoU@5 is the family's rate. The grid is "
        f"{', '.join(f'{lr:g}' for lr in s['lrs'])}; where a family's best sat at its edge, the "
        f"search went on one step beyond it (at most {EXTEND}). Machine: {_cpu_name()}, "
        f"{recipe['threads']} thread per run, two runs side by side on the 2 cores (train s: "
        "shared cores, not a timing).",
        "",
        "A short run favours a larger rate than the long one it stands for would; the families "
        "are compared at the same length, and the chosen rate is the recipe's "
        "(`ablations/conf/pretrain.yaml`, checked by tests/test_pretrain.py).",
        "",
        "| preset | lr | mIoU@1 | mIoU@5 | 5-1 gain | final loss | train s | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset, runs in results.items():
        best = best_lr(results, preset) if runs else None
        for lr, f in sorted(runs.items(), key=lambda kv: float(kv[0])):
            mark = "**yes**" if float(lr) == best else ""
            lines.append(
                f"| {preset} | {lr} | {f[names.MIOU1]:.3f} | {f[names.MIOU5]:.3f} | "
                f"{f[names.CLICK_GAIN]:+.3f} | {f['final_loss']:.4f} | {f[names.TRAIN_S]:.0f} | "
                f"{mark} |"
            )
    (out / "search" / "record.md").write_text("\n".join(lines) + "\n")
    (out / "search" / "record.json").write_text(json.dumps(results, indent=1) + "\n")
