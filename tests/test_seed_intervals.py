"""Intervals that include the training seed (`reports.stats.crossed_interval`): coverage on a
simulated seeds x objects design with known variances, pairing by seed and object, the tables'
notes for one seed and several, and the sentences a report ends with (`reports.conclusions`)."""

from __future__ import annotations

import numpy as np
import pytest

from reports import conclusions, stats, tables
from reports.table_format import Cell, Column, Table

TRUE_MEAN = 0.6


def simulate(rng, seeds: int, objects: int, s_seed: float, s_obj: float, s_e: float):
    """y[s, o] = mean + seed effect + object effect + interaction: the crossed design of a
    replicated sweep (every seed evaluated on the same objects)."""
    return (
        TRUE_MEAN
        + rng.normal(0, s_seed, (seeds, 1))
        + rng.normal(0, s_obj, (1, objects))
        + rng.normal(0, s_e, (seeds, objects))
    )


def coverage(draws: int, interval, **design) -> float:
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(draws):
        ci = interval(simulate(rng, **design))
        hits += ci.lo <= TRUE_MEAN <= ci.hi
    return hits / draws


@pytest.mark.parametrize(
    "design",
    [
        # 3 seeds, 101 objects: the demo's shape; the seed effect 0.05 is the size of the
        # CPU-type difference measured on the demo (0.08 of mIoU@1)
        {"seeds": 3, "objects": 101, "s_seed": 0.05, "s_obj": 0.2, "s_e": 0.1},
        {"seeds": 3, "objects": 101, "s_seed": 0.0, "s_obj": 0.2, "s_e": 0.1},  # no seed effect
        {"seeds": 5, "objects": 30, "s_seed": 0.1, "s_obj": 0.05, "s_e": 0.05},  # seeds dominate
    ],
)
def test_crossed_interval_covers_the_true_mean_95_percent_of_draws(design):
    got = coverage(1000, stats.crossed_interval, **design)
    assert 0.92 <= got <= 0.98, got


def test_an_object_only_interval_does_not_cover_a_seed_effect():
    """Why the seed must be in the interval: on the same draws, the bootstrap over objects of
    the seed-averaged values (what one seed's table shows) covers the true mean far less."""
    design = {"seeds": 3, "objects": 101, "s_seed": 0.05, "s_obj": 0.2, "s_e": 0.1}

    def objects_only(y):
        return stats.bootstrap(y.mean(axis=0), resamples=400)

    assert coverage(400, objects_only, **design) < 0.85
    assert 0.92 <= coverage(400, stats.crossed_interval, **design) <= 0.98


def test_crossed_interval_by_hand_and_its_edge_cases():
    y = np.array([[0.5, 0.7, 0.9], [0.6, 0.8, 1.0]])  # seed 2 is +0.1 everywhere: no interaction
    ci = stats.crossed_interval(y)
    # MS_seed = 3 * 2 * 0.05^2 / 1 = 0.015, MS_obj = 2 * (0.04 + 0 + 0.04) / 2 = 0.08, MS_e = 0:
    # var = (0.015 + 0.08) / 6; df = 0.095^2 / (0.015^2 / 1 + 0.08^2 / 2)
    from scipy import stats as sps

    df = 0.095**2 / (0.015**2 + 0.08**2 / 2)
    half = sps.t.ppf(0.975, df) * (0.095 / 6) ** 0.5
    assert ci.mean == pytest.approx(0.75)
    assert (ci.lo, ci.hi) == (pytest.approx(0.75 - half), pytest.approx(0.75 + half))
    assert (ci.n, ci.seeds) == (3, 2)
    flat = stats.crossed_interval(np.full((3, 4), 0.5))
    assert (flat.lo, flat.hi) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.crossed_interval(np.ones((1, 5)))


def runs_of(values_by_seed: dict[int, np.ndarray], names: list[str]):
    """Runs as the reports hold them: (object names, IoU matrix, seed), one click."""
    return [(names, v[:, None], s) for s, v in values_by_seed.items()]


def test_replicates_pair_by_seed_and_object():
    rng = np.random.default_rng(0)
    names = [f"o{i}" for i in range(40)]
    base = {s: rng.uniform(0.3, 0.9, 40) for s in (0, 1, 2)}
    better = {s: v + 0.05 + 0.01 * s for s, v in base.items()}  # +0.05, +0.06, +0.07 by seed
    a = stats.replicate_values(runs_of(better, names), "miou_at_1")
    b = stats.replicate_values(runs_of(base, names), "miou_at_1")
    d = stats.paired_seed_delta(a, b, "miou_at_1")
    assert d.mean == pytest.approx(0.06) and d.seeds == 3 and d.excludes_zero
    # listed in another order (seeds and objects): the same pairs, the same interval
    shuffled = {s: better[s][::-1] for s in (2, 0, 1)}
    a2 = stats.replicate_values(runs_of(shuffled, names[::-1]), "miou_at_1")
    d2 = stats.paired_seed_delta(a2, b, "miou_at_1")
    assert (d2.mean, d2.lo, d2.hi) == pytest.approx((d.mean, d.lo, d.hi))
    # no common seed: nothing to pair; one common seed: the paired bootstrap over objects
    other = stats.replicate_values(runs_of({9: base[0]}, names), "miou_at_1")
    assert stats.paired_seed_delta(a, other, "miou_at_1") is None
    one = stats.replicate_values(runs_of({0: base[0]}, names), "miou_at_1")
    assert stats.paired_seed_delta(a, one, "miou_at_1").seeds == 1


def test_one_seed_intervals_say_they_cover_objects_only():
    one = Cell("ok", 0.5, lo=0.4, hi=0.6, objects=101)
    three = Cell("ok", 0.5, lo=0.3, hi=0.7, objects=101, seeds=3)
    (note,) = tables.interval_notes([one])
    assert "over the objects only" in note and "one training seed" in note
    (note,) = tables.interval_notes([three])
    assert "3 training seeds and 101 objects" in note and "seed-to-seed" in note


def paired(rows, seeds=3) -> Table:
    columns = (Column("miou_at_5"), Column("noc90"))
    cells = tuple(
        (point, tuple(Cell("ok", m, n=1, lo=lo, hi=hi, delta=True, seeds=seeds) for m, lo, hi in c))
        for point, c in rows
    )
    return Table("paired_window_size", "Paired differences: window_size against window 4",
                 ("window",), columns, cells, rank=False)  # fmt: skip


def test_sentences_claim_only_what_the_intervals_show():
    table = paired(
        [
            ((16,), [(0.02, -0.01, 0.05), (-0.4, -0.9, 0.2)]),
            ((8,), [(0.03, 0.01, 0.05), (-1.0, -1.5, -0.5)]),
        ]
    )
    first, second = conclusions.conclusions([table])
    assert first == (
        "window=16 vs window 4 (over 3 seeds and the objects): 5-mIoU +2.00 [-1.00, 5.00] %, "
        "not shown (the interval includes 0); NoC90 -0.40 [-0.90, 0.20] clicks, not shown (the "
        "interval includes 0)."
    )
    assert "better" not in first and "worse" not in first
    assert "higher, better" in second and "lower, better" in second
    one_seed = conclusions.conclusions([paired([((16,), [(0.02, 0.01, 0.05), (0, 0, 0)])], 1)])
    assert "(over the objects of one seed)" in one_seed[0]
    assert conclusions.conclusions([Table("ablation_x", "x", (), (), ())]) == ()


def test_more_seeds_keep_the_first_seeds_trials():
    """repeats=3 after repeats=1: seed 42's trials keep their ids (resumed, not re-run); the
    new seeds add trials of their own, with their own training keys."""
    from ablations import config as C
    from ablations import spec as S

    def plan(*extra):
        args = ["grid=window_size", "train.base=scratch", *extra]
        return S.expand(*C.compose(C.parse_args(args)[0]))

    one, three = plan(), plan("repeats=3")
    assert len(three.trials) == 3 * len(one.trials)
    first = {t.trial_id: t.train_key for t in one.trials}
    seed42 = {t.trial_id: t.train_key for t in three.trials if t.seed == 42}
    assert seed42 == first
    others = [t for t in three.trials if t.seed != 42]
    assert {t.seed for t in others} == {43, 44}
    assert not {t.train_key for t in others} & set(first.values())
    assert "seed" in three.varying and "seed" not in one.varying
