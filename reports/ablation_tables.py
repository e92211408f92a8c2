"""Ablation tables: one per grid (``hrsam.grid`` tag), rows the grid's points, and a point with
no run is a ``missing`` row, never a shorter table. Repeats (seeds) are mean ± std; quality cells
carry 95% intervals over objects and each grid gets a table of paired differences against its
baseline point (`reports.stats`). Cells, ranking and notes are built as in `reports.tables`.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pandas as pd

from ablations.config import baseline_point
from hrsam import names
from reports import frame, stats
from reports.table_format import SIGNIFICANT, Cell, Column, Table, key_text
from reports.tables import (
    MAIN_QUALITY,
    aggregate_cell,
    conditions,
    finish,
    lookup,
    object_runs,
    observed,
    values_of,
    with_columns,
    with_interval,
)

ABLATION_METRICS = (
    names.MIOU5,
    names.CLICK_GAIN,
    names.NEG_CLICK_DELTA,
    names.ORACLE_GAIN,
    names.NOC85,
    names.NOC90,
    names.NOC95,
    names.NOF95,
    names.BIOU,
    names.ENCODER_MS,
    names.DECODER_MS,
    names.SAT_S,
    names.PEAK_MEM_MB,
    names.GFLOPS,
    names.PARAMS,
)


def ablation_tables(
    trials: pd.DataFrame,
    parents: pd.DataFrame,
    ious: dict | None = None,
    baseline: str | None = None,
) -> list[Table]:
    """One table per grid (``hrsam.grid`` tag): rows = grid points, columns = metrics; with
    ``ious`` (run id -> (object names, IoU matrix)) the quality cells carry 95% intervals and a
    second table gives each point's paired difference from the ``baseline`` point
    (`ablations.config.baseline_point`: a spec, else the sweeps' ``report.baseline`` param, else
    the grid's first point). Raises `ConfigError` for a baseline that names no point.

    The rows are the points that have runs when the sweeps' parent runs say (param ``trials``) that
    no planned trial lacks one; otherwise every point of the product of the values the varying
    params take, so a point without a run is a ``missing`` row.
    """
    tables = []
    grids = trials["grid"].fillna("(no grid)")
    parent_grids = parents["grid"].fillna("(no grid)") if len(parents) else pd.Series(dtype=object)
    for grid in dict.fromkeys(grids):
        t = trials[grids == grid]
        p = parents[parent_grids == grid] if len(parents) else parents
        keys = frame.varying_keys(t, p)
        present = set(frame.metric_keys(t))
        metrics = [m for m in ABLATION_METRICS if m in present] or list(MAIN_QUALITY)
        planned = _planned(p)
        table = ablation_table(
            t,
            keys,
            metrics,
            name=f"ablation_{_slug(grid)}",
            grid=grid,
            product=planned is None or len(t) < planned,
            ious=ious,
        )
        notes = conditions(t, metrics)
        if planned is not None and len(t) < planned:
            notes = (f"{planned - len(t)} of {planned} planned trials have no run.", *notes)
        tables.append(replace(table, notes=(*notes, *table.notes)))
        spec = baseline or _parent_baseline(p)
        paired = paired_table(t, keys, metrics, ious, spec, f"paired_{_slug(grid)}", grid)
        if paired is not None:
            tables.append(paired)
    return tables


def ablation_table(
    trials: pd.DataFrame,
    keys: list[str],
    metrics: list[str],
    name: str,
    grid: str = "",
    product: bool = True,
    ious: dict | None = None,
) -> Table:
    """Rows: the product of the values each of ``keys`` takes (``product``), else the points that
    have runs, sorted; columns: ``metrics`` (quality ones with intervals when ``ious`` has the
    runs' IoU matrices)."""
    t = with_columns(trials, metrics)
    agg = lookup(frame.aggregate(t, keys, metrics), keys)
    objects = object_runs(t, keys, ious)
    if not keys:
        points = [()]
    elif product:
        points = list(itertools.product(*(values_of(t[k]) for k in keys)))
    else:
        points = observed(t, keys)
    rows = tuple(
        (p, tuple(with_interval(aggregate_cell(agg.get(p), m), objects.get(p), m) for m in metrics))
        for p in points
    )
    index = tuple(frame.param_label(k) for k in keys) or ("grid",)
    if not keys:
        rows = tuple(((grid,), cells) for _, cells in rows)
    varying = ", ".join(keys) or "nothing"
    title = f"Ablation: {grid} (varying {varying})"
    return finish(Table(name, title, index, tuple(Column(m) for m in metrics), rows))


def paired_table(
    trials: pd.DataFrame,
    keys: list[str],
    metrics: list[str],
    ious: dict | None,
    baseline: str | None,
    name: str,
    grid: str = "",
) -> Table | None:
    """Each point minus the baseline point, metric by metric, over the objects both evaluated:
    the mean difference with its paired 95% bootstrap interval (`reports.stats.paired_delta`).
    None when nothing can be paired (one point, or no IoU matrices)."""
    quality = [m for m in metrics if stats.has_objects(m)]
    objects = object_runs(trials, keys, ious)
    if not keys or not quality or not objects:
        return None
    points = observed(trials, keys)
    if len(points) < 2:  # one point: nothing to pair
        return None
    base = baseline_point(baseline, keys, points)
    rows = []
    for point in points:
        ref = tuple(base.get(k, v) for k, v in zip(keys, point, strict=True))
        cells = []
        for m in quality:
            if ref == point:
                cells.append(Cell("baseline"))
            elif point not in objects or ref not in objects:
                cells.append(Cell("missing" if point not in objects else "none"))
            else:
                a = stats.replicate_values(objects[point], m)
                b = stats.replicate_values(objects[ref], m)
                d = stats.paired_seed_delta(a, b, m)
                if d is None:
                    cells.append(Cell("unpaired"))
                else:
                    delta = Cell(
                        "ok", d.mean, n=1, lo=d.lo, hi=d.hi, delta=True, objects=d.n, seeds=d.seeds
                    )
                    cells.append(delta)
        rows.append((point, tuple(cells)))
    what = ", ".join(f"{frame.param_label(k)}={key_text(v)}" for k, v in base.items())
    others = [frame.param_label(k) for k in keys if k not in base]
    within = f", at the same {', '.join(others)}" if others else ""
    seeds = max((c.seeds for _, cs in rows for c in cs), default=1)
    over = (
        "the interval's note below"
        if seeds > 1
        else f"95% paired bootstrap interval over the objects only ({stats.RESAMPLES} resamples;"
        " one training seed: it does not cover another seed)"
    )
    notes = (
        f"Δ: the row minus the baseline ({what}){within}, over the objects both evaluated; "
        f"[a, b]: {over}; {SIGNIFICANT}: the interval excludes 0. NoC and NoF: lower is better; "
        "mIoU: higher.",
    )
    index = tuple(frame.param_label(k) for k in keys)
    columns = tuple(Column(m, "Δ") for m in quality)
    title = f"Paired differences: {grid} against {what}"
    table = Table(name, title, index, columns, tuple(rows), notes, rank=False)
    return finish(table)


def _planned(parents: pd.DataFrame) -> int | None:
    """Trials the sweeps planned (their parent runs' ``trials`` param), None when unknown."""
    if not len(parents) or "trials" not in parents or parents["trials"].isna().any():
        return None
    return int(pd.to_numeric(parents["trials"]).sum())


def _parent_baseline(parents: pd.DataFrame) -> str | None:
    """The ``report.baseline`` the sweep was run with (a param of its parent run)."""
    if "report.baseline" not in parents:
        return None
    values = [str(v) for v in parents["report.baseline"] if not frame.is_missing(v)]
    return values[0] if values else None


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(name)).strip("_") or "grid"
