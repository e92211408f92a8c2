"""Paper figures from the runs frame (matplotlib + seaborn style): latency, memory and NoC against
ts, mIoU against clicks, NoC95 against latency with the Pareto front, and window-size and scale
ablation bars. One colour per attention variant (`frame.variant`) in every figure.

Each figure function takes the finished trials and the varying params and returns a
``matplotlib.figure.Figure`` (no pyplot, no global state) with its caption, or raises
`MissingDataError` saying what the data lacks. `make_figures` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from hrsam import names
from reports import frame, stats
from reports.frame import metric

MAX_SERIES = 12  # lines per figure; beyond, params are fixed (`_narrow`), then lines cut
MAX_BARS = 10  # bars per value in ablation bars
MODEL_KEYS = ("model.preset", "model.attention", "model.kernel")
SYSTEM_INDEPENDENT = ("data.name", "eval.protocol", "eval.max_clicks")  # no effect on latency
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
DASHES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")
BAR_KEYS = {"window_size": "model.window_size", "scale": "model.anchor_sizes"}
STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("paper", font_scale=1.1),
    "pdf.fonttype": 42,
    "savefig.dpi": 150,
}


class MissingDataError(Exception):
    """The data lacks what a figure needs; the message says what."""


@dataclass(frozen=True)
class Drawn:
    name: str
    caption: str
    figure: Figure


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


PATTERNS = ("global", "window", "shifted_pad", "shifted_kv", "swin")
KERNELS = ("math", "sdpa", "flex", "xformers", "flash")
KERNEL_LIGHTEN = (0.0, 0.3, 0.5, 0.62, 0.72)  # mixed with white, per kernel
SAM_PRESETS = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "sam_tiny")


def variant_colors(variants) -> dict[str, tuple]:
    """The same colour for a variant in every figure and report: a hue per attention pattern,
    lighter per kernel (math darkest); SAM presets in greys; unknown names after the palette."""
    base = dict(zip(PATTERNS, sns.color_palette("tab10", len(PATTERNS)), strict=True))
    names = sorted({str(v) for v in variants})
    colors, unknown = {}, []
    for name in names:
        pattern, _, kernel = name.partition("/")
        if pattern in base and kernel in KERNELS:
            colors[name] = _lighten(base[pattern], KERNEL_LIGHTEN[KERNELS.index(kernel)])
        elif name.startswith("sam_"):
            shade = SAM_PRESETS.index(name) if name in SAM_PRESETS else len(SAM_PRESETS)
            colors[name] = _lighten((0.15, 0.15, 0.15), 0.15 * shade)
        else:
            unknown.append(name)
    extra = sns.color_palette("tab10", 10)[len(PATTERNS) :]
    colors |= {n: extra[i % len(extra)] for i, n in enumerate(unknown)}
    return colors


def _lighten(rgb, amount: float) -> tuple:
    return tuple(c + (1 - c) * amount for c in rgb)


def make_figures(
    trials: pd.DataFrame, varying: list[str], ious: dict | None = None
) -> tuple[list[Drawn], list[Skipped]]:
    """All figures the finished trials support, and the ones skipped with the reason. With
    ``ious`` (run id -> (object names, IoU matrix)) quality metrics get 95% intervals."""
    ok = trials[frame.run_state(trials) == "ok"]
    ok = ok.assign(_ious=[(ious or {}).get(r) for r in ok["run_id"]])
    colors = variant_colors(ok["variant"])
    specs: list[tuple[str, Callable[[], tuple[Figure, str]]]] = [
        (
            "latency_vs_ts",
            lambda: metric_vs_ts(ok, varying, [names.ENCODER_MS], colors, log_y=True),
        ),
        (
            "memory_vs_ts",
            lambda: metric_vs_ts(ok, varying, [names.PEAK_MEM_MB], colors, log_y=True),
        ),
        ("noc_vs_ts", lambda: metric_vs_ts(ok, varying, [names.NOC90, names.NOC95], colors)),
        ("miou_vs_clicks", lambda: miou_vs_clicks(ok, varying, colors)),
        ("noc_vs_latency", lambda: noc_vs_latency(ok, varying, colors)),
    ]
    for name, key in BAR_KEYS.items():
        specs.append((f"bars_{name}", lambda key=key: ablation_bars(ok, varying, key, colors)))
    drawn, skipped = [], []
    with matplotlib.rc_context(STYLE):
        for name, draw in specs:
            try:
                fig, caption = draw()
            except MissingDataError as e:
                skipped.append(Skipped(name, str(e)))
                continue
            drawn.append(Drawn(name, caption, fig))
    return drawn, skipped


# -- series ------------------------------------------------------------------------------------


def series_keys(ok: pd.DataFrame, varying: list[str], exclude=(), quality=True) -> list[str]:
    """Keys that split runs into lines: variant, then presets / datasets / varying params that take
    more than one value (``exclude`` and, for system metrics, the dataset and protocol left out)."""
    drop = {*exclude, *frame.REPEAT_KEYS, "model.attention", "model.kernel"}
    if not quality:
        drop |= set(SYSTEM_INDEPENDENT)
    extra = ["model.preset", *varying, *(["data.name"] if quality else [])]
    keys = [k for k in dict.fromkeys(extra) if k not in drop and k in ok]
    return ["variant", *(k for k in keys if ok[k].nunique(dropna=True) > 1)]


def label_of(keys: list[str], values: tuple) -> str:
    parts = [str(values[0])] if keys and keys[0] == "variant" else []
    for k, v in zip(keys, values, strict=True):
        if k != "variant":
            parts.append(f"{frame.param_label(k)}={_text(v)}")
    return " · ".join(parts)


def _text(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _groups(agg: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """``agg`` split by ``keys``, ordered as `frame.value_order` orders each key."""
    ranks = {k: {v: i for i, v in enumerate(frame.value_order(agg[k]))} for k in keys}
    groups = list(agg.groupby(keys, sort=False, dropna=False))
    return sorted(
        ((g if isinstance(g, tuple) else (g,), d) for g, d in groups),
        key=lambda gd: [ranks[k].get(v, -1) for k, v in zip(keys, gd[0], strict=True)],
    )


def _styles(groups, keys) -> dict[tuple, int]:
    """Index of the line style per combination of the non-variant keys."""
    rest = dict.fromkeys(g[1:] for g, _ in groups)
    return {r: i for i, r in enumerate(rest)} if len(keys) > 1 else {(): 0}


def _narrow(
    rows: pd.DataFrame, keys: list[str], note: list[str], limit: int = MAX_SERIES
) -> tuple[pd.DataFrame, list[str]]:
    """Fewer series: while ``keys`` split ``rows`` into more than ``limit``, the non-variant key
    with the most values is fixed at its middle value (said in ``note``, for the caption)."""
    keys = list(keys)
    while len(keys) > 1 and rows.groupby(keys, dropna=False).ngroups > limit:
        key = max(keys[1:], key=lambda k: rows[k].nunique())
        values = frame.value_order(rows[key])
        middle = values[(len(values) - 1) // 2]
        rows = rows[rows[key] == middle]
        keys.remove(key)
        note.append(f"{frame.param_label(key)} fixed at {_text(middle)} (of {len(values)} values)")
    return rows, keys


def _cap(groups: list, note: list[str], what: str = "series", limit: int = MAX_SERIES) -> list:
    if len(groups) > limit:
        note.append(f"first {limit} of {len(groups)} {what} shown")
        return groups[:limit]
    return groups


def _aggregate(rows: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """`frame.aggregate` plus ``<m>_lo`` / ``<m>_hi``: the 95% bootstrap interval over objects of
    each per-object metric (`reports.stats`), NaN where the runs stored no IoU matrix."""
    agg = frame.aggregate(rows, keys, metrics)
    quality = [m for m in metrics if stats.has_objects(m)]
    if not quality or "_ious" not in rows:
        return agg
    bounds = {f"{m}_{b}": [] for m in quality for b in ("lo", "hi")}
    for _, row in agg.iterrows():
        match = pd.Series(True, index=rows.index)
        for k in keys:
            v = row[k]
            match &= rows[k].isna() if frame.is_missing(v) else rows[k] == v
        runs = [r for r in rows.loc[match, "_ious"] if r is not None]
        for m in quality:
            ci = stats.interval(stats.object_values(runs, m), m) if runs else None
            bounds[f"{m}_lo"].append(ci.lo if ci else np.nan)
            bounds[f"{m}_hi"].append(ci.hi if ci else np.nan)
    return agg.assign(**bounds)


def _spread(d: pd.DataFrame, m: str, scale: float):
    """Error bars: the interval over objects when known (asymmetric), else the std over repeats;
    None when neither exists. Returns (yerr, what the bars are)."""
    if f"{m}_lo" in d and d[f"{m}_lo"].notna().all():
        lo = (d[m] - d[f"{m}_lo"]) * scale
        hi = (d[f"{m}_hi"] - d[m]) * scale
        return np.vstack([lo.to_numpy(float), hi.to_numpy(float)]), "95% interval over objects"
    if (d[f"{m}_n"] > 1).any():
        return (d[f"{m}_std"].fillna(0) * scale).to_numpy(float), "std over repeats"
    return None, None


def _needs(ok: pd.DataFrame, metrics: list[str]) -> list[str]:
    have = [m for m in metrics if m in ok and ok[m].notna().any()]
    if not have:
        raise MissingDataError(f"no finished run logged {' or '.join(metrics)}")
    return have


def _ts_axis(ax, ts_values) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(ts_values)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(frame.param_axis("eval.ts"))


def _legend(fig: Figure, handles=None, labels=None) -> None:
    """One legend right of the panels (constrained layout makes room for it)."""
    if handles is None:
        handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)


# -- figures -----------------------------------------------------------------------------------


def metric_vs_ts(
    ok: pd.DataFrame, varying: list[str], metrics: list[str], colors: dict, log_y: bool = False
) -> tuple[Figure, str]:
    """One panel per metric against ts (log x; log y for latency and memory), a line per series."""
    metrics = _needs(ok, metrics)
    quality = not any(m in (names.ENCODER_MS, names.PEAK_MEM_MB, names.SAT_S) for m in metrics)
    rows = ok[ok[metrics].notna().any(axis=1)]
    ts = frame.value_order(rows["eval.ts"]) if "eval.ts" in rows else []
    if len(ts) < 2:
        found = f" (found {len(ts)}: {', '.join(map(_text, ts))})" if ts else ""
        raise MissingDataError(f"needs runs at >= 2 ts values{found}")
    keys = series_keys(rows, varying, exclude=("eval.ts",), quality=quality)
    note: list[str] = []
    rows, keys = _narrow(rows, keys, note)
    agg = _aggregate(rows, [*keys, "eval.ts"], metrics)
    groups = _cap(_groups(agg, keys), note)
    bars = set()
    styles = _styles(groups, keys)
    fig = Figure(figsize=(4.2 * len(metrics) + 2.2, 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics, strict=True):
        for g, d in groups:
            d = d.sort_values("eval.ts")
            d = d[d[m].notna()]
            s = styles[g[1:]] if len(keys) > 1 else 0
            yerr, what = _spread(d, m, metric(m).scale)
            if what:
                bars.add(what)
            ax.errorbar(
                d["eval.ts"].astype(float),
                d[m] * metric(m).scale,
                yerr=yerr,
                color=colors.get(g[0]),
                marker=MARKERS[s % len(MARKERS)],
                linestyle=DASHES[s % len(DASHES)],
                capsize=2,
                label=label_of(keys, g),
            )
        _ts_axis(ax, ts)
        if log_y:
            ax.set_yscale("log")
        ax.set_ylabel(metric(m).axis)
    _legend(fig)
    what = " and ".join(metric(m).long for m in metrics)
    scale = "log-log" if log_y else "log x"
    caption = f"{what[0].upper() + what[1:]} against ts ({scale}); mean over repeats"
    if bars:
        caption += f", bars = {' or '.join(sorted(bars))}"
    return fig, caption + "".join(f"; {n}" for n in note) + "."


def miou_vs_clicks(ok: pd.DataFrame, varying: list[str], colors: dict) -> tuple[Figure, str]:
    """mIoU after k clicks for k = 1 ... max_clicks, a line per series (best 5-mIoU first)."""
    clicks = frame.click_keys(ok)
    if len(clicks) < 2:
        raise MissingDataError(f"needs mIoU at >= 2 click counts (found {len(clicks)})")
    note: list[str] = []
    rows, keys = _narrow(ok, series_keys(ok, [*varying, "eval.ts"]), note)
    agg = _aggregate(rows, keys, clicks)
    rank = names.MIOU5 if names.MIOU5 in clicks else clicks[-1]
    groups = _groups(agg, keys)
    if len(groups) > MAX_SERIES:
        groups = sorted(groups, key=lambda gd: -np.nan_to_num(gd[1][rank].iloc[0], nan=-1))
        note.append(f"the {MAX_SERIES} of {len(groups)} series with the best {metric(rank).short}")
        groups = groups[:MAX_SERIES]
    styles = _styles(groups, keys)
    bands: set[str] = set()
    k = np.array([names.clicks_of(c) for c in clicks])
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for g, d in groups:
        row = d.iloc[0]
        mean = row[clicks].to_numpy(float) * 100
        std = row[[f"{c}_std" for c in clicks]].to_numpy(float) * 100
        s = styles[g[1:]] if len(keys) > 1 else 0
        color = colors.get(g[0])
        ax.plot(
            k,
            mean,
            color=color,
            marker=MARKERS[s % len(MARKERS)],
            markersize=3,
            linestyle=DASHES[s % len(DASHES)],
            label=label_of(keys, g),
        )
        band = None
        if all(f"{c}_lo" in row for c in clicks) and row[[f"{c}_lo" for c in clicks]].notna().all():
            band = (
                row[[f"{c}_lo" for c in clicks]].to_numpy(float) * 100,
                row[[f"{c}_hi" for c in clicks]].to_numpy(float) * 100,
            )
            bands.add("95% interval over objects")
        elif (row[[f"{c}_n" for c in clicks]] > 1).any():
            band = (mean - np.nan_to_num(std), mean + np.nan_to_num(std))
            bands.add("std over repeats")
        if band is not None:
            ax.fill_between(k, *band, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU (%)")
    ax.set_xticks(k if len(k) <= 10 else k[(k == 1) | (k % 5 == 0)])
    _legend(fig)
    caption = "mIoU against the number of clicks; mean over repeats"
    if bands:
        caption += f", band = {' or '.join(sorted(bands))}"
    return fig, caption + "".join(f"; {n}" for n in note) + "."


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both x and y (lower is better), by x."""
    order = np.lexsort((y, x))
    front, best = [], np.inf
    for i in order:
        if y[i] < best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def noc_vs_latency(ok: pd.DataFrame, varying: list[str], colors: dict) -> tuple[Figure, str]:
    """NoC95 against encoder latency, one point per configuration, the Pareto front marked; one
    panel per dataset."""
    _needs(ok, [names.NOC95])
    _needs(ok, [names.ENCODER_MS])
    rows = ok[ok[names.NOC95].notna() & ok[names.ENCODER_MS].notna()]
    keys = series_keys(rows, [*varying, "eval.ts"], exclude=("data.name",))
    datasets = frame.value_order(rows["data.name"]) if "data.name" in rows else [None]
    rows = rows if "data.name" in rows else rows.assign(**{"data.name": None})
    agg = frame.aggregate(rows, [*keys, "data.name"], [names.NOC95, names.ENCODER_MS])
    if len(agg) < 2:
        raise MissingDataError("needs >= 2 configurations with both NoC95 and encoder latency")
    fig = Figure(figsize=(4.2 * len(datasets) + 2.0, 3.6), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
    for ax, ds in zip(axes, datasets, strict=True):
        d = agg[agg["data.name"] == ds] if ds is not None else agg
        x, y = d[names.ENCODER_MS].to_numpy(float), d[names.NOC95].to_numpy(float)
        ax.scatter(x, y, c=[colors.get(v) for v in d["variant"]], s=28, zorder=3)
        front = pareto_front(x, y)
        ax.step(
            x[front], y[front], where="post", color="black", linestyle="--", linewidth=1, zorder=2
        )
        ax.scatter(x[front], y[front], s=90, facecolors="none", edgecolors="black", zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel(metric(names.ENCODER_MS).axis)
        if ds is not None and len(datasets) > 1:
            ax.set_title(str(ds))
    axes[0].set_ylabel(metric(names.NOC95).axis)
    shown = [v for v in colors if v in set(agg["variant"])]
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[v]) for v in shown]
    front_style = {"color": "black", "linestyle": "--", "marker": "o", "markerfacecolor": "none"}
    _legend(fig, [*handles, Line2D([], [], **front_style)], [*shown, "Pareto front"])
    caption = (
        "NoC95 against encoder latency (log x), one point per configuration (mean over repeats); "
        "dashed: the Pareto front (no other configuration is both faster and needs fewer clicks)."
    )
    return fig, caption


def ablation_bars(
    ok: pd.DataFrame, varying: list[str], key: str, colors: dict
) -> tuple[Figure, str]:
    """Bars of NoC95, 5-mIoU, encoder latency and peak memory per value of ``key``; error bars =
    std over repeats; one bar per combination of the other varying params."""
    name = frame.param_label(key)
    values = frame.value_order(ok[key]) if key in ok else []
    if len(values) < 2:
        found = f" (found {', '.join(map(_text, values))})" if values else ""
        raise MissingDataError(f"{name} takes < 2 values in the finished runs{found}")
    metrics = _needs(ok, [names.NOC95, names.MIOU5, names.ENCODER_MS, names.PEAK_MEM_MB])
    note: list[str] = []
    rows, hue = _narrow(ok, series_keys(ok, varying, exclude=(key,)), note, MAX_BARS)
    agg = _aggregate(rows, [*hue, key], metrics)
    groups = _cap(_groups(agg, hue), note, "bar groups", MAX_BARS)
    bars = set()
    styles = _styles(groups, hue)
    fig = Figure(figsize=(3.4 * len(metrics) + 2.2, 3.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    pos = {v: i for i, v in enumerate(values)}
    for ax, m in zip(axes, metrics, strict=True):
        sc = metric(m).scale
        present = [d[d[m].notna()] for _, d in groups]
        # the bars at one value sit side by side, centred on it
        at = {v: [j for j, d in enumerate(present) if (d[key] == v).any()] for v in values}
        width = 0.8 / max(1, *(len(js) for js in at.values()))
        for j, ((g, _), d) in enumerate(zip(groups, present, strict=True)):
            x = [pos[v] + width * (at[v].index(j) - (len(at[v]) - 1) / 2) for v in d[key]]
            yerr, what = _spread(d, m, sc)
            if what:
                bars.add(what)
            s = styles[g[1:]] if len(hue) > 1 else 0
            ax.bar(
                x,
                d[m] * sc,
                width,
                yerr=yerr,
                capsize=2,
                color=colors.get(g[0]),
                hatch=HATCHES[s % len(HATCHES)],
                edgecolor="white",
                label=label_of(hue, g),
            )
        ax.set_xticks(range(len(values)), [_text(v) for v in values])
        ax.set_xlabel(frame.param_axis(key))
        ax.set_ylabel(metric(m).axis)
    _legend(fig)
    caption = f"{name} ablation: mean over repeats"
    if bars:
        caption += f", error bars = {' or '.join(sorted(bars))}"
    return fig, caption + "".join(f"; {n}" for n in note) + "."
