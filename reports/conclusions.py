"""The sentences a report ends with, written from its paired-difference tables' intervals only:
"window 16 vs 4: 5-mIoU +2.0 % [-1.0, +5.0], not shown (the interval includes 0)". No sentence
claims an effect whose interval includes zero, and each says what its interval covers (seeds and
objects, or one seed's objects only)."""

from __future__ import annotations

from hrsam import names
from reports.frame import metric
from reports.table_format import Cell, Table, key_text, number_text

# the differences a reader asks about first, in this order, where the table has them
HEADLINE = (names.MIOU5, names.CLICK_GAIN, names.NOC90, names.NOC85)


def _point(index: tuple[str, ...], point: tuple) -> str:
    return ", ".join(f"{k}={key_text(v)}" for k, v in zip(index, point, strict=True))


def verdict(cell: Cell, m: str) -> str:
    """``higher`` / ``lower`` / ``fewer clicks`` ... when the interval excludes 0, else
    ``not shown``."""
    if cell.lo is None or cell.hi is None or (cell.lo <= 0 <= cell.hi):
        return "not shown (the interval includes 0)"
    info = metric(m)
    better = (cell.mean > 0) == info.higher_is_better
    direction = "higher" if cell.mean > 0 else "lower"
    return f"{direction}, {'better' if better else 'worse'} (the interval excludes 0)"


def sentences(table: Table, baseline: str) -> list[str]:
    """One sentence per non-baseline row of a paired table: each headline metric's difference
    with its interval and what it shows."""
    columns = [(i, c.metric) for i, c in enumerate(table.columns) if c.metric in HEADLINE]
    columns.sort(key=lambda ic: HEADLINE.index(ic[1]))
    out = []
    for point, cells in table.rows:
        parts = []
        for i, m in columns:
            cell = cells[i]
            if cell.state != "ok":
                continue
            info = metric(m)
            unit = f" {info.unit}" if info.unit else ""
            parts.append(f"{info.short} {number_text(cell, info)}{unit}, {verdict(cell, m)}")
            seeds = cell.seeds
        if parts:
            over = f"{seeds} seeds and the objects" if seeds > 1 else "the objects of one seed"
            head = f"{_point(table.index, point)} vs {baseline} (over {over})"
            out.append(f"{head}: " + "; ".join(parts) + ".")
    return out


def conclusions(tables: list[Table]) -> tuple[str, ...]:
    """The sentences of every paired table (``paired_*``) of a report."""
    out = []
    for t in tables:
        if not t.name.startswith("paired_"):
            continue
        baseline = t.title.split(" against ", 1)[-1]
        out += sentences(t, baseline)
    return tuple(out)
