"""The table value (`Table`: rows of `Cell`s under `Column`s) and its Markdown, LaTeX (booktabs),
HTML and CSV forms; a cell's text (``mean ± std [lo, hi]`` with its marks, or why it has no value).

`reports.tables` and `reports.ablation_tables` build the tables; `reports.document` and
`reports.build` write them.
"""

from __future__ import annotations

import csv
import html
import itertools
import math
from dataclasses import dataclass

from ablations.record import SHARED_MARK
from reports import frame
from reports.frame import metric

# no run at the point / no value logged / the baseline row of a paired table / no common objects
MISSING_TEXT = {"missing": "missing", "none": "—", "baseline": "baseline", "unpaired": "not paired"}
DAGGER = "†"
SHARED = SHARED_MARK  # the console table and results.md use the same mark
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
    seeds: int = 1  # training seeds behind the interval (1: it covers the objects only)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    index: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[tuple[tuple, tuple[Cell, ...]], ...]
    notes: tuple[str, ...] = ()
    rank: bool = True  # bold the best value per column


# -- rendering ---------------------------------------------------------------------------------


def number_text(cell: Cell, m: frame.Metric, pm: str = "±") -> str:
    """``mean`` or ``mean ± std`` in the metric's unit; counts (NoF) get one decimal when they
    are a mean over repeats or not whole."""
    mean = cell.mean * m.scale
    # a count (NoF) of one run, with or without its interval, is whole: 101 [99, 101]
    count = m.unit == "objects"
    spread = cell.std is not None and not math.isnan(cell.std) and cell.std != 0
    whole = (not spread if count else cell.std is None and cell.lo is None) and float(
        mean
    ).is_integer()
    decimals = m.decimals or (0 if whole else 1)
    text = f"{mean:+.{decimals}f}" if cell.delta else f"{mean:.{decimals}f}"
    if cell.std is not None and not math.isnan(cell.std) and not (count and whole):
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
    return number_text(cell, metric(col.metric)) + _marks(cell)


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
    text = number_text(cell, metric(col.metric), r"$\pm$")
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


def inline_html(text: str) -> str:
    """Escaped prose with Markdown's inline code (backticks) as ``<code>``: the notes, facts
    and captions are written once, for report.md, and read the same in report.html."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return html.escape(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


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
    notes = "".join(f"<p class='note'>{inline_html(n)}</p>" for n in table.notes)
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
