"""Uncertainty of the quality metrics, from the per-object IoU matrices every trial stores.

Every quality metric is a mean over objects of a per-object value (`per_object`): NoC@t of the
object, 1 when it fails at t (NoF, reported as a count), its IoU after k clicks. So a 95%
interval is a bootstrap over objects (percentile method, `RESAMPLES` resamples from a fixed seed,
the same resample indices for every metric and setting of one object set), and two settings
evaluated on the same objects are compared by the bootstrap of the per-object differences
(paired: the object-to-object spread, which dominates 16-64 synthetic objects, cancels).

A metric is *saturated* for one setting when it cannot rank settings: more than half of the
objects sit at the click cap (NoC) or fail (NoF). Pure numpy; the reports call it per table cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hrsam import names
from hrsam.interactive import metrics as M
from hrsam.interactive.metrics import per_object

LEVEL = M.LEVEL
RESAMPLES = 2000
SEED = 0  # bootstrap indices: the same for every report of the same objects
CLICK_GAIN = names.CLICK_GAIN  # mIoU@5 - mIoU@1 per object (hrsam.interactive.metrics.click_use)


@dataclass(frozen=True)
class Interval:
    """``mean`` with its ``LEVEL`` interval [``lo``, ``hi``] over ``n`` objects."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def has_objects(metric: str) -> bool:
    """Whether ``metric`` is a mean of per-object values (NoC, NoF, mIoU@k, the 5-1 gain)."""
    return bool(names.threshold_of(metric) or names.clicks_of(metric) or metric == CLICK_GAIN)


def is_count(metric: str) -> bool:
    """NoF is a count of objects: its value and interval are N x the per-object mean."""
    return names.is_count(metric)


def bootstrap(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Mean of ``values`` (one per object) with its percentile bootstrap interval (the library's
    `hrsam.interactive.metrics.mean_interval`, which the trials' click-use intervals use too)."""
    mean, lo, hi = M.mean_interval(values, resamples, seed, LEVEL)
    return Interval(mean, lo, hi, len(values))


Values = tuple[list[str], np.ndarray]  # object names and one value per object


def object_values(
    runs: list[tuple[list[str], np.ndarray]], metric: str, max_clicks: int | None = None
) -> Values:
    """Per-object values of ``metric`` for one setting from its runs' (names, IoU matrix):
    with repeats (seeds), the objects every run evaluated and the mean value over the runs, so
    that their mean is the mean of the runs' metric."""
    if not runs:
        raise ValueError("no IoU matrices")
    common = set(runs[0][0]).intersection(*(set(names) for names, _ in runs[1:]))
    names = [n for n in runs[0][0] if n in common]
    values = [per_object(_rows(n, m, names), metric, max_clicks) for n, m in runs]
    return names, np.mean(values, axis=0)


def interval(values: Values, metric: str) -> Interval:
    """The metric (NoF: a count of objects) with its bootstrap interval over objects."""
    ci = bootstrap(values[1])
    return _scaled(ci, ci.n) if is_count(metric) else ci


def paired_delta(values: Values, base: Values, metric: str) -> Interval | None:
    """``metric(values) - metric(base)`` over the objects both evaluated, with the bootstrap
    interval of the mean per-object difference; None when they share no object (another
    dataset: nothing to pair)."""
    where = {n: i for i, n in enumerate(base[0])}
    common = [i for i, n in enumerate(values[0]) if n in where]
    if not common:
        return None
    diff = values[1][common] - base[1][[where[values[0][i]] for i in common]]
    ci = bootstrap(diff)
    return _scaled(ci, ci.n) if is_count(metric) else ci


def _scaled(ci: Interval, factor: float) -> Interval:
    return Interval(ci.mean * factor, ci.lo * factor, ci.hi * factor, ci.n)


def saturated(values: Values, metric: str, max_clicks: int) -> bool:
    """True when ``metric`` cannot separate settings: NoC with more than half of the objects at
    the click cap, or NoF with more than half of the objects failing."""
    found = names.threshold_of(metric)
    if not found:
        return False
    v = values[1]
    stuck = v >= 1 if names.is_count(metric) else v >= max_clicks
    return bool(stuck.mean() > 0.5)


def _rows(names: list[str], matrix: np.ndarray, keep: list[str]) -> np.ndarray:
    where = {n: i for i, n in enumerate(names)}
    return np.asarray(matrix, dtype=np.float64)[[where[n] for n in keep]]
