"""Paper tables from the runs frame: the main table, and the cell building, ranking and notes
every table shares (the table value and its text forms are `reports.table_format`).

`main_table` follows the HRSAM / SegNext main-table layout (rows: model and ts; per dataset
5-mIoU, NoC90, NoC95, NoF95; then encoder latency, per-click latency, peak memory and SAT).
Repeats (seeds) are mean ± std; quality cells carry 95% intervals over objects (`reports.stats`).
The best value per column is bold (`frame.Metric.higher_is_better` says which way is better).
The ablation tables and their paired differences are `reports.ablation_tables`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pandas as pd

from ablations import record as R
from hrsam import names
from reports import frame, stats
from reports.frame import metric
from reports.table_format import (
    DAGGER,
    SATURATED,
    SHARED,
    Cell,
    Column,
    Table,
    number_text,
    state_text,
)

MAIN_QUALITY = (names.MIOU5, names.NOC90, names.NOC95, names.NOF95)
MAIN_SYSTEM = (names.ENCODER_MS, names.DECODER_MS, names.PEAK_MEM_MB, names.SAT_S)
MODEL_KEYS = ("model.preset", "model.attention", "model.kernel")


# -- main table --------------------------------------------------------------------------------


def main_table(
    trials: pd.DataFrame, varying: Iterable[str] = (), ious: dict | None = None
) -> Table:
    """Rows: model (preset, with ``attention/kernel`` when a preset has several) and ts, plus any
    other varying param; columns: `MAIN_QUALITY` per dataset, then `MAIN_SYSTEM`. ``ious``
    (run id -> (object names, IoU matrix)) gives the quality cells their intervals."""
    t = with_columns(trials.assign(model=model_labels(trials)), MAIN_QUALITY + MAIN_SYSTEM)
    # the kernel that produced a row's timings stands beside them (issue #29)
    t = t.assign(**{"model.kernel": t.get("model.kernel", pd.Series("?", t.index)).fillna("?")})
    skip = (*MODEL_KEYS, "eval.ts", "data.name", *frame.REPEAT_KEYS)
    keys = ["model", *(["eval.ts"] if "eval.ts" in t else []), "model.kernel"]
    keys += [k for k in varying if k in t and k not in skip]
    datasets = values_of(t["data.name"]) if "data.name" in t else [None]
    if "data.name" not in t:
        t = t.assign(**{"data.name": None})
    quality = lookup(
        frame.aggregate(t, [*keys, "data.name"], list(MAIN_QUALITY)), [*keys, "data.name"]
    )
    system = lookup(frame.aggregate(t, keys, list(MAIN_SYSTEM)), keys)
    columns = [Column(m, ds or "") for ds in datasets for m in MAIN_QUALITY]
    columns += [Column(m) for m in MAIN_SYSTEM]
    objects = object_runs(t, [*keys, "data.name"], ious)
    rows = []
    for point in observed(t, keys):
        cells = [
            with_interval(
                aggregate_cell(quality.get((*point, ds)), m), objects.get((*point, ds)), m
            )
            for ds in datasets
            for m in MAIN_QUALITY
        ]
        cells += [aggregate_cell(system.get(point), m) for m in MAIN_SYSTEM]
        rows.append((point, tuple(cells)))
    index = tuple(frame.param_label(k) for k in keys)
    note = ("encoder and SAT: over every run of the row, all datasets.",)
    note += conditions(trials, MAIN_QUALITY + MAIN_SYSTEM)
    return finish(Table("main", "Main results", index, tuple(columns), tuple(rows), note))


def model_labels(trials: pd.DataFrame) -> pd.Series:
    """The preset, with ``(attention/kernel)`` when the preset appears with several variants."""
    preset = trials.get("model.preset", trials["variant"]).fillna("?").astype(str)
    n = trials.assign(_p=preset).groupby("_p")["variant"].transform("nunique")
    with_variant = preset + " (" + trials["variant"].astype(str) + ")"
    return preset.where((n <= 1) | preset.str.startswith("sam_"), with_variant)


def failed_rows(trials: pd.DataFrame) -> list[dict]:
    """Trials that did not finish: ``trial_id``, ``label``, ``state``, ``error``."""
    t = trials.assign(state=frame.run_state(trials))
    bad = t[t["state"] != "ok"]
    return [
        {
            "trial_id": r.run_id if frame.is_missing(r.trial_id) else r.trial_id,
            "label": "" if frame.is_missing(r.label) else r.label,
            "state": r.state,
            "error": "" if frame.is_missing(r.error) else str(r.error).splitlines()[0],
        }
        for r in bad.itertuples()
    ]


# -- notes: what a table's numbers were measured with ------------------------------------------


def conditions(trials: pd.DataFrame, metrics: Iterable[str]) -> tuple[str, ...]:
    """What a table's numbers were measured with: the device, precision and threads of its
    timings and what each timing column means; the click protocol of its quality columns."""
    ok = trials[frame.run_state(trials) == "ok"]
    notes = []
    timings = [m for m in metrics if m in names.TIMING_PROTOCOL]
    if timings and len(ok):
        where = sorted(
            {
                f"{_text(r.get('device_name'))} ({_text(r.get('precision'))}, "
                f"{_text(r.get('threads'))} threads)"
                for r in ok.to_dict("records")
            }
        )
        notes.append(f"timings on {'; '.join(where)}.")
        notes += kernel_notes(ok)
        notes += [f"{metric(m).short}: {names.TIMING_PROTOCOL[m]}." for m in timings]
    quality = [
        m
        for m in metrics
        if m in names.QUALITY_METRICS
        or m in names.CLICK_USE_METRICS
        or names.clicks_of(m) is not None
    ]
    if quality and len(ok) and "eval.protocol" in ok:
        protocols = sorted({str(v) for v in ok["eval.protocol"].dropna()})
        clicks = sorted({str(v) for v in ok.get("eval.max_clicks", pd.Series()).dropna()})
        notes.append(
            f"NoC / NoF / mIoU: click protocol {', '.join(protocols)}"
            + (f", {', '.join(clicks)} clicks per object." if clicks else ".")
        )
    empty = [r for r in ok.to_dict("records") if R.predicts_nothing(r)] if quality else []
    if empty:
        at: dict[str, set] = {}
        for r in empty:
            label, ts = _empty_label(r)
            at.setdefault(label, set()).update([] if ts is None else [ts])
        where = "; ".join(
            f"{k} (ts {', '.join(str(t) for t in sorted(v))})" if v else k for k, v in at.items()
        )
        notes.append(
            f"EMPTY: {where} predicted nothing (mIoU below {R.EMPTY_MIOU:g} after every click): "
            "a training that did not learn, not a measurement of the model."
        )
    if quality and len(ok) and names.UPSAMPLED in ok:
        up = ok[ok[names.UPSAMPLED].fillna(0) > 0]
        if len(up):
            where = sorted({_text(v) for v in up.get("eval.ts", pd.Series("?", up.index))})
            notes.append(
                f"UPSAMPLED: at ts {', '.join(where)} objects were evaluated above their "
                "image's native size: not a high-resolution result."
            )
    return tuple(notes)


def kernel_notes(ok: pd.DataFrame) -> list[str]:
    """The attention kernel behind the timings; when model families ran different kernels, a
    warning that their latencies compare kernels as well as models."""
    if "model.kernel" not in ok:
        return []
    family = ok.get("model.preset", pd.Series("?", ok.index)).fillna("?").astype(str)
    family = family.str.split("_").str[0]
    kernels = ok["model.kernel"].fillna("?").astype(str)
    per_family = {f: sorted(set(kernels[family == f])) for f in dict.fromkeys(family)}
    if len(set(kernels)) <= 1:
        only = _text(kernels.iloc[0]) if len(kernels) else "?"
        return [f"attention kernel: {only} in every row."]
    text = "; ".join(f"{f} {', '.join(k)}" for f, k in per_family.items())
    mixed = len({tuple(k) for k in per_family.values()}) > 1
    warn = " Families ran different kernels: their latencies compare kernels too." if mixed else ""
    return [f"attention kernels: {text}.{warn}"]


def _empty_label(run: dict) -> tuple[str, int | None]:
    """(the run's preset, else its label; its eval ts or None)."""
    preset = run.get("model.preset")
    label = _text(preset) if not frame.is_missing(preset) else _text(run.get("label"))
    ts = run.get("eval.ts")
    return label, None if frame.is_missing(ts) else int(ts)


def _text(v) -> str:
    return "unknown" if frame.is_missing(v) else str(v)


# -- cells, ranking and notes every table shares (`reports.ablation_tables` too) ---------------


def with_columns(t: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """``t`` with an all-NaN column for each of ``metrics`` no run logged."""
    absent = {m: float("nan") for m in metrics if m not in t}
    return t.assign(**absent) if absent else t


def values_of(s: pd.Series) -> list:
    """The values ``s`` takes in `frame.value_order`, then None when some are missing."""
    values = frame.value_order(s)
    return [*values, None] if s.isna().any() else values


def observed(t: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Key combinations present in ``t``, sorted key by key as `frame.value_order` sorts."""
    ranks = {k: {v: i for i, v in enumerate(values_of(t[k]))} for k in keys}
    points = {tuple(_key(v) for v in row) for row in t[keys].itertuples(index=False)}
    return sorted(points, key=lambda p: [ranks[k][v] for k, v in zip(keys, p, strict=True)])


def _key(v):
    return None if frame.is_missing(v) else v


def lookup(agg: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.Series]:
    """The rows of a `frame.aggregate` result by their point of ``keys`` (missing: None)."""
    return {tuple(_key(row[k]) for k in keys): row for _, row in agg.iterrows()}


def object_runs(t: pd.DataFrame, keys: list[str], ious: dict | None) -> dict[tuple, list]:
    """Per point of ``keys``, the (object names, IoU matrix, training seed) of its finished runs
    that have one."""
    if not ious:
        return {}
    ok = t[frame.run_state(t) == "ok"]
    seeds = ok["seed"] if "seed" in ok else pd.Series(0, index=ok.index)
    out: dict[tuple, list] = {}
    for i, run_id in zip(ok.index, ok["run_id"], strict=True):
        if run_id in ious:
            point = tuple(_key(ok.at[i, k]) for k in keys)
            seed = pd.to_numeric(seeds.at[i], errors="coerce")
            seed = 0 if pd.isna(seed) else int(seed)
            out.setdefault(point, []).append((*ious[run_id][:2], seed))
    return out


def aggregate_cell(stats: pd.Series | None, m: str) -> Cell:
    """The cell of metric ``m`` from a `frame.aggregate` row (None: no run at the point)."""
    if stats is None:
        return Cell("missing")
    if stats["state"] != "ok":
        detail = stats.get("detail")
        return Cell(stats["state"], detail=None if frame.is_missing(detail) else str(detail))
    n = int(stats.get(f"{m}_n", 0) or 0)
    if n == 0:
        return Cell("none")
    std = stats[f"{m}_std"] if n > 1 else None
    shared = m in names.TIMING_PROTOCOL and bool(stats.get("shared", False))
    return Cell("ok", float(stats[m]), std, n, int(stats["n_runs"] - stats["n_ok"]), shared=shared)


def with_interval(cell: Cell, runs: list | None, m: str) -> Cell:
    """The cell with the 95% interval of a per-object metric (over the seeds and the objects
    with replicates, else over the objects) and whether that metric is saturated here
    (`reports.stats`)."""
    if cell.state != "ok" or not runs or not stats.has_objects(m):
        return cell
    values = stats.object_values(runs, m)
    ci = stats.seed_interval(stats.replicate_values(runs, m), m)
    cap = runs[0][1].shape[1]
    saturated = stats.saturated(values, m, cap)
    return replace(cell, lo=ci.lo, hi=ci.hi, objects=ci.n, seeds=ci.seeds, saturated=saturated)


def interval_notes(cells: list[Cell], rank: bool = True) -> list[str]:
    """What the intervals of ``cells`` cover: seeds and objects, or (one seed) objects only."""
    with_ci = [c for c in cells if c.lo is not None]
    notes = []
    one = [c for c in with_ci if c.seeds == 1]
    several = [c for c in with_ci if c.seeds > 1]
    if rank and one:
        n = sorted({c.objects for c in one})
        notes.append(
            "[a, b]: 95% bootstrap interval over the objects only (percentile, "
            f"{stats.RESAMPLES} resamples of {'/'.join(map(str, n))} objects): one training "
            "seed, so it does not cover a re-run with another seed or on another CPU type "
            "(`repeats=3` replicates every point)."
        )
    if several:
        s = sorted({c.seeds for c in several})
        n = sorted({c.objects for c in several})
        what = "differences paired by seed and object" if any(c.delta for c in several) else ""
        notes.append(
            f"[a, b]{' of ' + what if what else ''}: 95% interval over {'/'.join(map(str, s))} "
            f"training seeds and {'/'.join(map(str, n))} objects (two-way random-effects "
            "ANOVA, t with Satterthwaite's degrees of freedom): it covers seed-to-seed and "
            "object-to-object variance."
        )
    return notes


def finish(table: Table) -> Table:
    """Marks the best value per column (when the column's values differ) and adds the notes."""
    columns = list(zip(*(cells for _, cells in table.rows), strict=True)) if table.rows else []
    best = []
    for col, cells in zip(table.columns, columns, strict=True):
        m = metric(col.metric)
        shown = {
            i: float(number_text(c, m).split(" ")[0])
            for i, c in enumerate(cells)
            if c.state == "ok"
        }
        exclusive = {i: v for i, v in shown.items() if not cells[i].shared}
        # one value, all equal, a saturated metric or a table of differences: no best; a timing
        # taken on shared cores is shown, marked, and never the best
        if (
            len(set(shown.values())) < 2
            or not exclusive
            or not table.rank
            or any(c.saturated for c in cells)
        ):
            best.append(set())
            continue
        pick = max if m.higher_is_better else min
        top = pick(exclusive.values())
        best.append({i for i, v in exclusive.items() if v == top})
    rows = tuple(
        (point, tuple(replace(c, best=i in best[j]) for j, c in enumerate(cells)))
        for i, (point, cells) in enumerate(table.rows)
    )
    cells = [c for _, cs in rows for c in cs]
    notes = []
    if table.rank:
        notes.append(
            "bold: best per column (higher is better for mIoU and BIoU, lower for the rest)."
        )
    notes += interval_notes(cells, table.rank)
    if any(c.saturated for c in cells):
        notes.append(
            f"{SATURATED}: saturated: more than half of the objects at the click cap (NoC) or "
            "failing (NoF); such a column does not rank the settings."
        )
    if any(c.n > 1 for c in cells):
        notes.append("mean ± std over repeats (seeds).")
    if any(c.n_failed for c in cells):
        notes.append(f"{DAGGER}: some repeats did not finish; the value is over those that did.")
    if any(c.shared for c in cells):
        notes.append(
            f"{SHARED}: timed while another trial ran on the same machine (executor.parallel > 1"
            " or a SLURM node shared by array tasks): not comparable with exclusive timings."
        )
    if any(c.state == "missing" for c in cells):
        notes.append("missing: no run at this point.")
    if any(c.state == "none" for c in cells):
        notes.append("—: the runs logged no value.")
    details = {c.detail for c in cells if c.state == "unsupported" and c.detail}
    notes += sorted(f"{d}." for d in details if d != state_text(Cell("unsupported", detail=d)))
    return replace(table, rows=rows, notes=(*table.notes, *notes))
