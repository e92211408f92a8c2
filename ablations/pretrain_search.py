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
import time
from pathlib import Path

import numpy as np

from ablations.provenance import _cpu_name, git_state
from hrsam import names

ROOT = Path(__file__).resolve().parent.parent
LOSS_EVERY = 100  # the final loss of a run: the mean of its last steps


def search(presets: list[str], recipe: dict, out: Path, uri: str | None, data_root=None) -> dict:
    """Short runs at each of ``search.lrs`` per preset (resumable: one folder per run), each
    evaluated by mIoU@5 at ``search.eval_ts``; returns {preset: {lr: figures}} and writes the
    record table."""
    import torch

    from ablations.pretrain import StepLog, build_seeded, data_config, rounded, train_config
    from hrsam.interactive.evaluate import evaluate
    from hrsam.train.loop import train

    torch.set_num_threads(recipe["threads"])
    s = recipe["search"]
    data = data_config(recipe, data_root)
    dataset, val = data.build("train"), data.build("val")
    results = _read_search(out)
    for preset in presets:
        for lr in s["lrs"]:
            key = f"{lr:g}"
            if key in results.get(preset, {}):
                continue
            tc = train_config(recipe, preset, lr=lr, steps=s["steps"])
            model = build_seeded(preset, tc)
            logger = StepLog(f"{preset} lr {key}", None)
            logger.total = tc.steps
            t0 = time.perf_counter()
            state = train(model, dataset, tc, out / "search" / preset / key, on_step=logger)
            train_s = time.perf_counter() - t0
            r = evaluate(model.eval(), val, ts=s["eval_ts"], max_clicks=s["eval_clicks"])
            summary = r.summary()
            figures = {
                names.MIOU1: summary[names.miou_at(1)],
                names.MIOU5: summary[names.miou_at(5)],
                names.CLICK_GAIN: summary[names.CLICK_GAIN],
                "final_loss": float(np.mean(state.losses[-LOSS_EVERY:])),
                "train_s": train_s,
            }
            results.setdefault(preset, {})[key] = {k: rounded(v) for k, v in figures.items()}
            print(f"{preset} lr {key}: {json.dumps(results[preset][key])}", flush=True)
            _write_search(out, results, recipe, preset)
    return results


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
        f"{s['eval_clicks']} clicks; the best mIoU@5 is the family's rate. Machine: "
        f"{_cpu_name()}, {recipe['threads']} thread(s) per run.",
        "",
        "| preset | lr | mIoU@1 | mIoU@5 | 5-1 gain | final loss | train s | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset, runs in results.items():
        best = best_lr(results, preset) if runs else None
        for lr, f in runs.items():
            mark = "**yes**" if float(lr) == best else ""
            lines.append(
                f"| {preset} | {lr} | {f[names.MIOU1]:.3f} | {f[names.MIOU5]:.3f} | "
                f"{f[names.CLICK_GAIN]:+.3f} | {f['final_loss']:.4f} | {f['train_s']:.0f} | "
                f"{mark} |"
            )
    (out / "search" / "record.md").write_text("\n".join(lines) + "\n")
    (out / "search" / "record.json").write_text(json.dumps(results, indent=1) + "\n")
