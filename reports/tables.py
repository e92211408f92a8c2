"""Paper tables from the runs frame, and their Markdown, LaTeX (booktabs), HTML and CSV forms.

`main_table` follows the HRSAM / SegNext main-table layout (rows: model and ts; per dataset
5-mIoU, NoC90, NoC95, NoF95; then encoder latency, per-click latency, peak memory and SAT).
`ablation_tables` gives one table per grid: rows are the grid's points, and a point with no run
is a ``missing`` row, never a shorter table. Repeats (seeds) are mean ± std; quality cells carry
95% intervals over objects and each grid gets a table of paired differences (`reports.stats`).
The best value per column is bold (`frame.Metric.higher_is_better` says which way is better).
"""

from __future__ import annotations

import csv
import html
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pandas as pd

from ablations import record as R
from ablations.config import baseline_point
from hrsam import names
from reports import frame, stats
from reports.frame import metric

MAIN_QUALITY = (names.MIOU5, names.NOC90, names.NOC95, names.NOF95)
MAIN_SYSTEM = (names.ENCODER_MS, names.DECODER_MS, names.PEAK_MEM_MB, names.SAT_S)
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
MODEL_KEYS = ("model.preset", "model.attention", "model.kernel")
# no run at the point / no value logged / the baseline row of a paired table / no common objects
MISSING_TEXT = {"missing": "missing", "none": "—", "baseline": "baseline", "unpaired": "not paired"}
DAGGER = "†"
SHARED = "‡"
SATURATED = "§"
SIGNIFICANT = "*"


@dataclass(frozen=True)
class Column:
    metric: str
    group: str = ""  # the dataset in the main table's two-level header

    @property
    def header(self) -> str:
        return f"{self.group} {metric(self.metric).header}".strip()


@dataclass(frozen=True)
class Cell:
    """One table cell. ``state``: ``ok``, ``missing`` (no run at this point), ``none`` (runs
    finished without this metric), or the runs' `frame.run_state` (``failed``, ...)."""

    state: str = "ok"
    mean: float | None = None
    std: float | None = None
    n: int = 0
    n_failed: int = 0  # repeats that did not finish while others did
    best: bool = False
    detail: str | None = None  # a not-ok cell's run error: ``unsupported: <reason>``
    shared: bool = False  # a timing taken while another trial ran on the same machine
    lo: float | None = None  # the 95% interval over objects (`reports.stats`)
    hi: float | None = None
    saturated: bool = False  # most objects at the click cap: the metric cannot rank settings
    delta: bool = False  # a paired difference against the baseline row (signed)
    objects: int = 0  # objects behind the interval


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    index: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[tuple[tuple, tuple[Cell, ...]], ...]
    notes: tuple[str, ...] = ()
    rank: bool = True  # bold the best value per column


# -- building ----------------------------------------------------------------------------------


def main_table(
    trials: pd.DataFrame, varying: Iterable[str] = (), ious: dict | None = None
) -> Table:
    """Rows: model (preset, with ``attention/kernel`` when a preset has several) and ts, plus any
    other varying param; columns: `MAIN_QUALITY` per dataset, then `MAIN_SYSTEM`. ``ious``
    (run id -> (object names, IoU matrix)) gives the quality cells their intervals."""
    t = _with_columns(trials.assign(model=model_labels(trials)), MAIN_QUALITY + MAIN_SYSTEM)
    # the kernel that produced a row's timings stands beside them (issue #29)
    t = t.assign(**{"model.kernel": t.get("model.kernel", pd.Series("?", t.index)).fillna("?")})
    skip = (*MODEL_KEYS, "eval.ts", "data.name", *frame.REPEAT_KEYS)
    keys = ["model", *(["eval.ts"] if "eval.ts" in t else []), "model.kernel"]
    keys += [k for k in varying if k in t and k not in skip]
    datasets = _values(t["data.name"]) if "data.name" in t else [None]
    if "data.name" not in t:
        t = t.assign(**{"data.name": None})
    quality = _lookup(
        frame.aggregate(t, [*keys, "data.name"], list(MAIN_QUALITY)), [*keys, "data.name"]
    )
    system = _lookup(frame.aggregate(t, keys, list(MAIN_SYSTEM)), keys)
    columns = [Column(m, ds or "") for ds in datasets for m in MAIN_QUALITY]
    columns += [Column(m) for m in MAIN_SYSTEM]
    objects = _object_runs(t, [*keys, "data.name"], ious)
    rows = []
    for point in _observed(t, keys):
        cells = [
            _with_interval(_cell(quality.get((*point, ds)), m), objects.get((*point, ds)), m)
            for ds in datasets
            for m in MAIN_QUALITY
        ]
        cells += [_cell(system.get(point), m) for m in MAIN_SYSTEM]
        rows.append((point, tuple(cells)))
    index = tuple(frame.param_label(k) for k in keys)
    note = ("encoder and SAT: over every run of the row, all datasets.",)
    note += conditions(trials, MAIN_QUALITY + MAIN_SYSTEM)
    return _finish(Table("main", "Main results", index, tuple(columns), tuple(rows), note))


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


def _parent_baseline(parents: pd.DataFrame) -> str | None:
    """The ``report.baseline`` the sweep was run with (a param of its parent run)."""
    if "report.baseline" not in parents:
        return None
    values = [str(v) for v in parents["report.baseline"] if not frame.is_missing(v)]
    return values[0] if values else None


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
    objects = _object_runs(trials, keys, ious)
    if not keys or not quality or not objects:
        return None
    points = _observed(trials, keys)
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
                a = stats.object_values(objects[point], m)
                b = stats.object_values(objects[ref], m)
                d = stats.paired_delta(a, b, m)
                if d is None:
                    cells.append(Cell("unpaired"))
                else:
                    delta = Cell("ok", d.mean, n=1, lo=d.lo, hi=d.hi, delta=True, objects=d.n)
                    cells.append(delta)
        rows.append((point, tuple(cells)))
    what = ", ".join(f"{frame.param_label(k)}={key_text(v)}" for k, v in base.items())
    others = [frame.param_label(k) for k in keys if k not in base]
    within = f", at the same {', '.join(others)}" if others else ""
    notes = (
        f"Δ: the row minus the baseline ({what}){within}, over the objects both evaluated; "
        f"[a, b]: 95% paired bootstrap interval over objects ({stats.RESAMPLES} resamples); "
        f"{SIGNIFICANT}: the interval excludes 0. NoC and NoF: lower is better; mIoU: higher.",
    )
    index = tuple(frame.param_label(k) for k in keys)
    columns = tuple(Column(m, "Δ") for m in quality)
    title = f"Paired differences: {grid} against {what}"
    table = Table(name, title, index, columns, tuple(rows), notes, rank=False)
    return _finish(table)


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


def _planned(parents: pd.DataFrame) -> int | None:
    """Trials the sweeps planned (their parent runs' ``trials`` param), None when unknown."""
    if not len(parents) or "trials" not in parents or parents["trials"].isna().any():
        return None
    return int(pd.to_numeric(parents["trials"]).sum())


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
    t = _with_columns(trials, metrics)
    agg = _lookup(frame.aggregate(t, keys, metrics), keys)
    objects = _object_runs(t, keys, ious)
    if not keys:
        points = [()]
    elif product:
        points = list(itertools.product(*(_values(t[k]) for k in keys)))
    else:
        points = _observed(t, keys)
    rows = tuple(
        (p, tuple(_with_interval(_cell(agg.get(p), m), objects.get(p), m) for m in metrics))
        for p in points
    )
    index = tuple(frame.param_label(k) for k in keys) or ("grid",)
    if not keys:
        rows = tuple(((grid,), cells) for _, cells in rows)
    varying = ", ".join(keys) or "nothing"
    title = f"Ablation: {grid} (varying {varying})"
    return _finish(Table(name, title, index, tuple(Column(m) for m in metrics), rows))


def _object_runs(t: pd.DataFrame, keys: list[str], ious: dict | None) -> dict[tuple, list]:
    """Per point of ``keys``, the (object names, IoU matrix) of its finished runs that have one."""
    if not ious:
        return {}
    ok = t[frame.run_state(t) == "ok"]
    out: dict[tuple, list] = {}
    for i, run_id in zip(ok.index, ok["run_id"], strict=True):
        if run_id in ious:
            point = tuple(_key(ok.at[i, k]) for k in keys)
            out.setdefault(point, []).append(ious[run_id])
    return out


def _with_interval(cell: Cell, runs: list | None, m: str) -> Cell:
    """The cell with the 95% interval over objects of a per-object metric, and whether that
    metric is saturated here (`reports.stats`)."""
    if cell.state != "ok" or not runs or not stats.has_objects(m):
        return cell
    values = stats.object_values(runs, m)
    ci = stats.interval(values, m)
    cap = runs[0][1].shape[1]
    saturated = stats.saturated(values, m, cap)
    return replace(cell, lo=ci.lo, hi=ci.hi, objects=ci.n, saturated=saturated)


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


def _with_columns(t: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    absent = {m: float("nan") for m in metrics if m not in t}
    return t.assign(**absent) if absent else t


def _values(s: pd.Series) -> list:
    values = frame.value_order(s)
    return [*values, None] if s.isna().any() else values


def _observed(t: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Key combinations present in ``t``, sorted key by key as `frame.value_order` sorts."""
    ranks = {k: {v: i for i, v in enumerate(_values(t[k]))} for k in keys}
    points = {tuple(_key(v) for v in row) for row in t[keys].itertuples(index=False)}
    return sorted(points, key=lambda p: [ranks[k][v] for k, v in zip(keys, p, strict=True)])


def _key(v):
    return None if frame.is_missing(v) else v


def _lookup(agg: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.Series]:
    return {tuple(_key(row[k]) for k in keys): row for _, row in agg.iterrows()}


def _cell(stats: pd.Series | None, m: str) -> Cell:
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


def _finish(table: Table) -> Table:
    """Marks the best value per column (when the column's values differ) and adds the notes."""
    columns = list(zip(*(cells for _, cells in table.rows), strict=True)) if table.rows else []
    best = []
    for col, cells in zip(table.columns, columns, strict=True):
        m = metric(col.metric)
        shown = {
            i: float(_number(c, m).split(" ")[0]) for i, c in enumerate(cells) if c.state == "ok"
        }
        # one value, all equal, a saturated metric or a table of differences: no best
        if len(set(shown.values())) < 2 or not table.rank or any(c.saturated for c in cells):
            best.append(set())
            continue
        pick = max if m.higher_is_better else min
        top = pick(shown.values())
        best.append({i for i, v in shown.items() if v == top})
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
    if table.rank and any(c.lo is not None for c in cells):
        n = sorted({c.objects for c in cells if c.lo is not None})
        notes.append(
            "[a, b]: 95% bootstrap interval over the objects (percentile, "
            f"{stats.RESAMPLES} resamples of {'/'.join(map(str, n))} objects)."
        )
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


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(name)).strip("_") or "grid"


# -- rendering ---------------------------------------------------------------------------------


def _number(cell: Cell, m: frame.Metric, pm: str = "±") -> str:
    """``mean`` or ``mean ± std`` in the metric's unit; counts (NoF) get one decimal when they
    are a mean over repeats or not whole."""
    mean = cell.mean * m.scale
    whole = cell.std is None and cell.lo is None and float(mean).is_integer()
    decimals = m.decimals or (0 if whole else 1)
    text = f"{mean:+.{decimals}f}" if cell.delta else f"{mean:.{decimals}f}"
    if cell.std is not None and not math.isnan(cell.std):
        text += f" {pm} {cell.std * m.scale:.{decimals}f}"
    if cell.lo is not None:
        text += f" [{cell.lo * m.scale:.{decimals}f}, {cell.hi * m.scale:.{decimals}f}]"
    return text


def significant(cell: Cell) -> bool:
    """A paired difference whose interval excludes zero."""
    return cell.delta and cell.lo is not None and (cell.lo > 0 or cell.hi < 0)


def state_text(cell: Cell) -> str:
    """A cell without a value: ``failed``, ``missing``, ``—`` or ``unsupported: <what>`` (the
    reason's first clause; the table's notes give it whole)."""
    if cell.state == "unsupported" and cell.detail:
        return ": ".join(cell.detail.split(": ")[:2])
    return MISSING_TEXT.get(cell.state, cell.state)


def cell_text(cell: Cell, col: Column) -> str:
    """Plain text of a cell: ``12.34 ± 0.50``, ``failed``, ``missing``, ``—`` or
    ``unsupported: <reason>``."""
    if cell.state != "ok":
        return state_text(cell)
    return _number(cell, metric(col.metric)) + _marks(cell)


def _marks(cell: Cell) -> str:
    return (
        (DAGGER if cell.n_failed else "")
        + (SHARED if cell.shared else "")
        + (SATURATED if cell.saturated else "")
        + (SIGNIFICANT if significant(cell) else "")
    )


def key_text(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def to_markdown(table: Table) -> str:
    header = [*table.index, *(c.header for c in table.columns)]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    aligns = "|" + ":--|" * len(table.index) + "--:|" * len(table.columns)
    lines[1] = aligns
    for point, cells in table.rows:
        texts = [_md(key_text(v)) for v in point]
        for cell, col in zip(cells, table.columns, strict=True):
            text = _md(cell_text(cell, col))
            texts.append(f"**{text}**" if cell.best else text)
        lines.append("| " + " | ".join(texts) + " |")
    notes = [f"*{n}*" for n in table.notes]
    return "\n".join([*lines, "", *notes]).rstrip()


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "—": "---",
    "§": r"\S{}",
    "*": r"$^*$",
    "Δ": r"$\Delta$",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_cell(cell: Cell, col: Column) -> str:
    if cell.state == "none":
        return "--"
    if cell.state != "ok":
        return rf"\textit{{{latex_escape(state_text(cell))}}}"
    text = _number(cell, metric(col.metric), r"$\pm$")
    if cell.best:
        text = rf"\textbf{{{text}}}"
    return text + latex_escape(_marks(cell))


def to_latex(table: Table) -> str:
    """A ``table`` float with a booktabs ``tabular``; dataset groups get a ``\\cmidrule``."""
    ni = len(table.index)
    spec = "l" * ni + "r" * len(table.columns)
    lines = [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(' '.join([table.title + '.', *table.notes]))}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    groups = [(g, len(list(cs))) for g, cs in itertools.groupby(c.group for c in table.columns)]
    if any(g for g, _ in groups):
        head, rules, start = [""] * ni, [], ni + 1
        for g, n in groups:
            if g:
                head.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}")
                rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            else:
                head += [""] * n
            start += n
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    header = [*table.index, *(metric(c.metric).header for c in table.columns)]
    lines += [" & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for point, cells in table.rows:
        texts = [latex_escape(key_text(v)) for v in point]
        texts += [_latex_cell(c, col) for c, col in zip(cells, table.columns, strict=True)]
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    esc = html.escape
    groups = [(g, len(list(cs))) for g, cs in itertools.groupby(c.group for c in table.columns)]
    head = []
    if any(g for g, _ in groups):
        cells = [f'<th colspan="{n}">{esc(g)}</th>' for g, n in groups]
        head.append(f'<tr><th colspan="{len(table.index)}"></th>{"".join(cells)}</tr>')
    names = [*table.index, *(metric(c.metric).header for c in table.columns)]
    head.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in names) + "</tr>")
    body = []
    for point, cells in table.rows:
        tds = [f'<td class="key">{esc(key_text(v))}</td>' for v in point]
        for cell, col in zip(cells, table.columns, strict=True):
            text = esc(cell_text(cell, col))
            cls = cell.state if cell.state != "ok" else ("best" if cell.best else "")
            tds.append(f'<td class="{cls}">{f"<b>{text}</b>" if cell.best else text}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f"<p class='note'>{esc(n)}</p>" for n in table.notes)
    return f"<table><thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table>{notes}"


def csv_rows(table: Table) -> tuple[list[str], list[dict]]:
    """Machine-readable form: per column the mean (unscaled) or the cell's state, std and n."""
    fields = list(table.index)
    for col in table.columns:
        name = f"{col.group} {col.metric}".strip()
        fields += [name, f"{name} std", f"{name} lo", f"{name} hi", f"{name} n"]
    rows = []
    for point, cells in table.rows:
        row = dict(zip(table.index, (key_text(v) for v in point), strict=True))
        for col, cell in zip(table.columns, cells, strict=True):
            name = f"{col.group} {col.metric}".strip()
            ok = cell.state == "ok"
            row[name] = repr(cell.mean) if ok else state_text(cell)
            row[f"{name} std"] = "" if cell.std is None or not ok else repr(cell.std)
            row[f"{name} lo"] = "" if cell.lo is None or not ok else repr(cell.lo)
            row[f"{name} hi"] = "" if cell.hi is None or not ok else repr(cell.hi)
            row[f"{name} n"] = cell.n
        rows.append(row)
    return fields, rows


def write_csv(table: Table, path) -> None:
    fields, rows = csv_rows(table)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
