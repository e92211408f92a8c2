"""The runs table: MLflow's ``search_runs`` frame made tidy, the sweep's trials picked out, repeats
aggregated, and what every metric means (label, unit, which direction is better).

One row per run after `tidy`: ``run_id status role trial_id grid label error parent start_time``,
the params under their dotted config keys (``model.window_size``, ``eval.ts``; numeric where every
value parses), the metrics under their names (``noc95``, ``miou_at_5``, ``encoder_ms``) and
``variant`` (``attention/kernel``, or the preset for SAM rows). Everything here is pure pandas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablations import record as R
from hrsam import names

TAGS = {f"tags.{tag}": name for tag, name in names.TAG_COLUMNS.items()}
# Params a grid may vary, in the order they appear as row keys (``seed`` makes repeats).
KNOWN_PARAMS = (
    "model.preset",
    "model.attention",
    "model.kernel",
    "model.window_size",
    "model.scan",
    "model.cycle_repeats",
    "model.anchor_sizes",
    "model.detail",
    "data.name",
    "eval.ts",
    "eval.protocol",
    "eval.max_clicks",
    "train.enabled",
    "train.steps",
    "train.ts",
)
REPEAT_KEYS = ("seed",)
PRESET_ORDER = (
    "sam_tiny",
    "sam_vit_b",
    "sam_vit_l",
    "sam_vit_h",
    "hrsam_tiny",
    "hrsampp_tiny",
    "hrsam_vit_b",
    "hrsampp_vit_b",
)
DATASET_ORDER = ("hqseg44k", "davis", "grabcut", "berkeley", "synthetic")


@dataclass(frozen=True)
class Metric:
    """How a metric is shown: ``short`` in table headers, ``long`` on axes; ``scale`` x value."""

    short: str
    long: str
    unit: str = ""
    higher_is_better: bool = False
    scale: float = 1.0
    decimals: int = 2

    @property
    def header(self) -> str:
        return f"{self.short} ({self.unit})" if self.unit else self.short

    @property
    def axis(self) -> str:
        return f"{self.long} ({self.unit})" if self.unit else self.long


METRICS = {
    **{names.noc(t): Metric(f"NoC{t}", f"NoC{t}", "clicks") for t in names.THRESHOLDS},
    **{names.nof(t): Metric(f"NoF{t}", f"NoF{t}", "objects", decimals=0) for t in names.THRESHOLDS},
    names.BIOU: Metric("BIoU", "boundary IoU", "%", True, 100.0),
    names.ENCODER_MS: Metric("encoder", "encoder latency", "ms", decimals=1),
    names.ENCODER_MS_IQR: Metric("encoder IQR", "encoder latency IQR", "ms", decimals=1),
    names.DECODER_MS: Metric("decoder", "decoder latency per click", "ms", decimals=1),
    names.SAT_S: Metric("SAT", "SAT latency", "s"),
    names.SPC_S: Metric("SPC", "seconds per click", "s", decimals=3),
    names.PEAK_MEM_MB: Metric("peak mem", "peak memory", "MB", decimals=0),
    names.EVAL_ENCODER_MS: Metric(
        "eval encoder", "encoder latency in evaluation", "ms", decimals=1
    ),
    names.EVAL_DECODER_MS: Metric(
        "eval decoder", "decoder latency in evaluation", "ms", decimals=1
    ),
    names.EVAL_PEAK_MEM_MB: Metric("eval peak mem", "peak memory in evaluation", "MB", decimals=0),
    names.PARAMS: Metric(names.PARAMS, "parameters", "M", scale=1e-6),
    names.GFLOPS: Metric("GFLOPs", "encoder GFLOPs", decimals=1),
    names.TRAIN_S: Metric("train", "training time", "s", decimals=0),
    # click use (hrsam.interactive.metrics.click_use): what clicks 2-5 and the previous mask add
    names.CLICK_GAIN: Metric("5-1 gain", "mIoU@5 - mIoU@1", "%", True, 100.0),
    names.NEG_CLICK_DELTA: Metric("neg Δ", "IoU change after a negative click", "%", True, 100.0),
    names.POS_CLICK_DELTA: Metric("pos Δ", "IoU change after a positive click", "%", True, 100.0),
    names.HARMFUL_CLICKS: Metric("harmful", "share of clicks that lower IoU", "%", False, 100.0),
    names.ORACLE_GAIN: Metric(
        "oracle gain", "ideal previous mask: gain over 1 click", "%", True, 100.0
    ),
    names.UPSAMPLED: Metric(
        names.UPSAMPLED, "objects evaluated above native size", "%", False, 100.0
    ),
}


def metric(key: str) -> Metric:
    """Display facts of metric ``key``; ``miou_at_k`` is "k-mIoU" in percent."""
    if key in METRICS:
        return METRICS[key]
    if (k := names.clicks_of(key)) is not None:
        return Metric(f"{k}-mIoU", f"mIoU after {k} clicks", "%", True, 100.0)
    return Metric(key, key)


PARAM_UNITS = {"eval.ts": "px", "train.ts": "px", "model.window_size": "tokens",
               "model.anchor_sizes": "px"}  # fmt: skip


def param_label(key: str) -> str:
    """``model.window_size`` -> ``window_size``: the config leaf is the name used everywhere."""
    return key.rsplit(".", 1)[-1]


def param_axis(key: str) -> str:
    """Axis label of a param: ``window_size (tokens)``, ``ts (px)``."""
    unit = PARAM_UNITS.get(key)
    return f"{param_label(key)} ({unit})" if unit else param_label(key)


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """``search_runs`` frame -> one row per run with plain column names (see module docstring)."""
    out = pd.DataFrame(index=raw.index)
    out["run_id"] = raw.get("run_id", pd.Series(raw.index.astype(str), index=raw.index))
    out["status"] = raw.get("status", "FINISHED")
    out["start_time"] = raw.get("start_time", pd.NaT)
    for col, name in TAGS.items():
        out[name] = raw[col] if col in raw else None
    out["role"] = out["role"].fillna("trial")
    cols = {"run_id", "status", "start_time", *out.columns}
    values = {}  # every param and metric column, joined once (no column-by-column fragmenting)
    for col in raw.columns:
        kind, _, name = col.partition(".")
        if kind == "params" and name not in cols:
            values[name] = _parse_param(raw[col])
        elif kind == "metrics" and name not in cols:
            values[name] = pd.to_numeric(raw[col], errors="coerce")
    out = pd.concat([out, pd.DataFrame(values, index=raw.index)], axis=1)
    out["variant"] = variant(out)
    return out.reset_index(drop=True)


def _parse_param(values: pd.Series) -> pd.Series:
    """Params are strings in MLflow: numbers when every present value is one, else strings."""
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if len(present) and numeric.notna().all():
        parsed = pd.to_numeric(values, errors="coerce")
        if (parsed.dropna() % 1 == 0).all():
            return parsed.astype("Int64")
        return parsed
    return values.astype(object).where(values.notna(), None)


def variant(runs: pd.DataFrame) -> pd.Series:
    """``attention/kernel`` per run; the preset for SAM baselines (``sam_vit_b``)."""
    preset = _col(runs, "model.preset").astype(str)
    att = _col(runs, "model.attention").fillna("?").astype(str)
    ker = _col(runs, "model.kernel").fillna("?").astype(str)
    pattern = att + "/" + ker
    return pattern.where(~preset.str.startswith("sam_"), preset)


def _col(runs: pd.DataFrame, key: str) -> pd.Series:
    return runs[key] if key in runs else pd.Series([None] * len(runs), index=runs.index)


def trials(runs: pd.DataFrame, sweep: str | None = None) -> pd.DataFrame:
    """The trial runs of one sweep (``sweep`` = parent run id) or of the whole experiment.

    A trial run again after a failure or a resumed sweep keeps its latest finished run.
    """
    t = runs[runs["role"] != "sweep"]
    if sweep is not None:
        t = t[t["parent"] == sweep]
    t = t.assign(_ok=t["status"] == "FINISHED", _key=t["trial_id"].fillna(t["run_id"]))
    t = t.sort_values(["_ok", "start_time"], kind="stable")
    t = t.drop_duplicates("_key", keep="last").sort_index()
    return t.drop(columns=["_ok", "_key"]).reset_index(drop=True)


def sweeps(runs: pd.DataFrame) -> pd.DataFrame:
    """Parent (sweep) runs, newest first."""
    s = runs[runs["role"] == "sweep"]
    return s.sort_values("start_time", ascending=False, kind="stable").reset_index(drop=True)


def varying_keys(runs: pd.DataFrame, parents: pd.DataFrame) -> list[str]:
    """Params that vary: the union of the sweeps' ``hrsam.varying`` tags, or, without tags, the
    known params taking more than one value. Present in ``runs``, in `KNOWN_PARAMS` order."""
    tagged = {
        k.strip() for v in parents.get("varying", []) if isinstance(v, str) for k in v.split(",")
    }
    keys = [k for k in tagged if k and k in runs and k not in REPEAT_KEYS]
    if not tagged:
        keys = [k for k in KNOWN_PARAMS if k in runs and runs[k].nunique(dropna=True) > 1]
    return sort_keys(keys)


def sort_keys(keys: Iterable[str]) -> list[str]:
    order = {k: i for i, k in enumerate(KNOWN_PARAMS)}
    return sorted(set(keys), key=lambda k: (order.get(k, len(order)), k))


def metric_keys(runs: pd.DataFrame) -> list[str]:
    """Metric columns holding at least one value."""
    keys = [c for c in runs.columns if c in METRICS or names.clicks_of(c) is not None]
    return [k for k in keys if runs[k].notna().any()]


def click_keys(runs: pd.DataFrame) -> list[str]:
    """``miou_at_k`` columns with values, in click order."""
    keys = [c for c in metric_keys(runs) if names.clicks_of(c) is not None]
    return sorted(keys, key=names.clicks_of)


def value_order(values: Iterable) -> list:
    """Distinct values sorted for display: numbers ascending, then known names, then the rest."""
    rank = {v: i for i, v in enumerate(PRESET_ORDER + DATASET_ORDER)}

    def key(v):
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            return (0, float(v), "")
        return (1, rank.get(v, len(rank)), _natural(str(v)))

    return sorted({v for v in values if not is_missing(v)}, key=key)


def _natural(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def is_missing(v) -> bool:
    """None, NaN or pandas' NA."""
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def run_state(runs: pd.DataFrame) -> pd.Series:
    """What a run says in a table cell when it has no value: ``failed``, ``unsupported`` (the
    trial's own status, `ablations.record.UNSUPPORTED`), ``killed``, ``running``; ``ok`` for
    finished runs."""
    status = runs["status"].fillna("UNKNOWN").str.lower().replace({"finished": "ok"})
    own = runs["trial_status"] if "trial_status" in runs else pd.Series(None, index=runs.index)
    return status.where(own.fillna("") != R.UNSUPPORTED, "unsupported")


def aggregate(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, std and count of each metric over finished runs per ``keys`` group (repeats).

    Returns one row per group present in ``runs`` with ``keys``, ``<m>``, ``<m>_std``, ``<m>_n``
    and ``n_runs``, ``n_ok``, ``state`` (`run_state` of the first not-ok run when none is ok) and
    ``detail`` (that run's error tag: the traceback's last line, or ``unsupported: <reason>``).
    """
    group = list(keys) or ["_all"]
    state = run_state(runs)
    detail = runs["error"].where(state != "ok") if "error" in runs else None
    shared = runs["timing_shared"].astype(str) == "True" if "timing_shared" in runs else False
    runs = runs.assign(_state=state, _ok=state == "ok", _all=0, _detail=detail, _shared=shared)
    ok = runs[runs["_ok"]]
    stats = ok.groupby(group, dropna=False, sort=False)[metrics].agg(["mean", "std", "count"])
    suffix = {"mean": "", "std": "_std", "count": "_n"}
    stats.columns = [f"{m}{suffix[s]}" for m, s in stats.columns]
    counts = runs.groupby(group, dropna=False, sort=False).agg(
        n_runs=("_ok", "size"),
        n_ok=("_ok", "sum"),
        state=("_state", "first"),
        detail=("_detail", "first"),
        shared=("_shared", "any"),
    )
    counts["state"] = counts["state"].where(counts["n_ok"] == 0, "ok")
    out = counts.join(stats, how="left").reset_index()
    return out.drop(columns=["_all"], errors="ignore")
