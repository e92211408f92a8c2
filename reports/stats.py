"""Uncertainty of the quality metrics, from the per-object IoU matrices every trial stores.

Every quality metric is a mean over objects of a per-object value (`per_object`): NoC@t of the
object, 1 when it fails at t (NoF, reported as a count), its IoU after k clicks. So a 95%
interval is a bootstrap over objects (percentile method, `RESAMPLES` resamples from a fixed seed,
the same resample indices for every metric and setting of one object set), and two settings
evaluated on the same objects are compared by the bootstrap of the per-object differences
(paired: the object-to-object spread, which dominates 16-64 synthetic objects, cancels).

With replicates (the same grid point trained with several seeds, each evaluated on the same
objects), a metric's per-object values form a seeds x objects matrix and its interval must cover
both ways the number would move in a re-run: another training seed and other objects
(`seed_interval`). Paired differences pair by seed and object (`paired_seed_delta`). With one
seed the intervals cover objects only, and the tables say so.

A metric is *saturated* for one setting when it cannot rank settings: more than half of the
objects sit at the click cap (NoC) or fail (NoF). Pure numpy; the reports call it per table cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

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
    seeds: int = 1  # training seeds the interval covers (1: objects only)

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
    names, matrix = _per_run(runs, metric, max_clicks)
    return names, matrix.mean(axis=0)


def _per_run(runs: list, metric: str, max_clicks: int | None = None) -> tuple[list, np.ndarray]:
    """(the objects every run evaluated, runs x objects values of ``metric``)."""
    if not runs:
        raise ValueError("no IoU matrices")
    common = set(runs[0][0]).intersection(*(set(r[0]) for r in runs[1:]))
    names = [n for n in runs[0][0] if n in common]
    values = [per_object(_rows(r[0], r[1], names), metric, max_clicks) for r in runs]
    return names, np.asarray(values, dtype=np.float64)


Replicates = tuple[list[int], list[str], np.ndarray]  # seeds, objects, seeds x objects values


def replicate_values(runs: list, metric: str, max_clicks: int | None = None) -> Replicates:
    """Per seed and object values of ``metric`` from runs given as (object names, IoU matrix,
    seed): the objects every run evaluated; runs of one seed (the same trial listed twice)
    averaged."""
    names, matrix = _per_run(runs, metric, max_clicks)
    seeds = sorted({int(r[2]) for r in runs})
    rows = [matrix[[i for i, r in enumerate(runs) if int(r[2]) == s]].mean(axis=0) for s in seeds]
    return seeds, names, np.asarray(rows)


def crossed_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """The grand mean of a seeds x objects matrix with an interval that covers the seed-to-seed
    and the object-to-object variance.

    The design is crossed: every seed is evaluated on the same objects, so the mean moves with
    the seeds' effects (``s2_seed / S``), the objects' effects (``s2_obj / O``) and their
    interaction (``s2_e / (S O)``). The two-way random-effects ANOVA gives that variance without
    bias from the mean squares, ``(MS_seed + MS_obj - MS_e) / (S O)``, and Satterthwaite's degrees
    of freedom for the t quantile. Why not a bootstrap: with 3 seeds a percentile bootstrap over
    seeds (rliable's stratified bootstrap too, which resamples runs within tasks) can never reach
    beyond the 3 seed means and covers the true mean far less than 95% of the time (the
    simulated-coverage test measures both); nested resampling of objects within each seed treats
    one object as independent across seeds and shrinks the object term by S. With 2 degrees of
    freedom the t quantile (4.3) makes the interval honest about how little 3 seeds say."""
    y = np.asarray(values, dtype=np.float64)
    s, o = y.shape
    mean = float(y.mean())
    if s < 2:
        raise ValueError("a crossed interval needs at least 2 seeds")
    seed_means, obj_means = y.mean(axis=1), y.mean(axis=0)
    ms_seed = o * float(((seed_means - mean) ** 2).sum()) / (s - 1)
    if o == 1:  # one object: seeds only
        terms = [(1.0, ms_seed, s - 1)]
    else:
        ms_obj = s * float(((obj_means - mean) ** 2).sum()) / (o - 1)
        resid = y - seed_means[:, None] - obj_means[None, :] + mean
        ms_e = float((resid**2).sum()) / ((s - 1) * (o - 1))
        # variance components truncated at 0, as is usual: a mean square below the residual's
        # says its component is nil, not negative
        c_seed, c_obj = float(ms_seed > ms_e), float(ms_obj > ms_e)
        terms = [(c_seed, ms_seed, s - 1), (c_obj, ms_obj, o - 1)]
        terms.append((1.0 - c_seed - c_obj, ms_e, (s - 1) * (o - 1)))
    total = sum(c * ms for c, ms, _ in terms)
    if total <= 0:
        return Interval(mean, mean, mean, o, s)
    df = total**2 / sum((c * ms) ** 2 / df for c, ms, df in terms if c)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(total / (s * o))
    return Interval(mean, mean - half, mean + half, o, s)


def seed_interval(values: Replicates, metric: str) -> Interval:
    """The metric over seeds and objects (`crossed_interval`; NoF: a count of objects); with
    one seed, the bootstrap over objects (`interval`)."""
    seeds, names, y = values
    if len(seeds) < 2:
        return interval((names, y[0]), metric)
    ci = crossed_interval(y)
    return _scaled(ci, ci.n) if is_count(metric) else ci


def paired_seed_delta(values: Replicates, base: Replicates, metric: str) -> Interval | None:
    """``metric(values) - metric(base)`` paired by seed and object (the seeds and objects both
    have), with the crossed interval of the differences; one common seed: the paired bootstrap
    over objects. None when nothing pairs."""
    seeds = [s for s in values[0] if s in base[0]]
    where = {n: i for i, n in enumerate(base[1])}
    objects = [i for i, n in enumerate(values[1]) if n in where]
    if not seeds or not objects:
        return None
    a = values[2][[values[0].index(s) for s in seeds]][:, objects]
    b = base[2][[base[0].index(s) for s in seeds]][:, [where[values[1][i]] for i in objects]]
    diff = a - b
    ci = crossed_interval(diff) if len(seeds) > 1 else bootstrap(diff[0])
    return _scaled(ci, ci.n) if is_count(metric) else ci


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
    return Interval(ci.mean * factor, ci.lo * factor, ci.hi * factor, ci.n, ci.seeds)


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
