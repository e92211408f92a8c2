"""Build a sweep's report from MLflow: ``python -m reports.build experiment=<name> [key=value ...]``

    python -m reports.build experiment=window_size
    python -m reports.build experiment=resolution sweep=3f2a9c... out=outputs/report
    python -m reports.build experiment=paper_main mlflow.tracking_uri=http://login:5000 log=false

Reads the experiment's runs once, then writes ``out`` (default ``reports/out/<experiment>``):
``report.md``, a self-contained ``report.html``, ``tables/*.{md,tex,csv}`` and
``figures/*.{png,pdf}``, and logs the folder as ``report/`` artifacts of the sweep's parent run
(the newest sweep when ``sweep`` is not given). Bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from ablations.config import ConfigError
from hrsam import cli
from hrsam.cli import UsageError
from reports import (
    ablation_tables,
    conclusions,
    document,
    figures,
    frame,
    gallery,
    table_format,
    tables,
    tracking,
)
from reports.tracking import ReportError

KEYS = {
    "experiment": (str, "MLflow experiment (a sweep's grid name unless it set experiment=)"),
    "sweep": (str, "parent run id of one sweep (default: every trial of the experiment)"),
    "out": (str, "report folder (default reports/out/<experiment>)"),
    "mlflow.tracking_uri": (
        str,
        "MLflow tracking URI (the sweep's key; default MLFLOW_TRACKING_URI, sqlite:///mlflow.db)",
    ),
    "log": (bool, "log the report as artifacts of the sweep's parent run"),
    "baseline": (
        str,
        "the point paired differences are taken against (window_size=8; default: "
        "the sweep's report.baseline, else the grid's first point)",
    ),
}
DEFAULTS = {"log": True}
CONCLUSIONS_FILE = "conclusions.md"  # the sentences alone, for the sweep's results.md
DEFAULT_OUT = Path("reports/out")


def build(
    experiment: str,
    sweep: str | None = None,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
    baseline: str | None = None,
) -> Path:
    """Writes the report of ``experiment`` (one ``sweep``'s trials, or all) and returns its folder.

    Raises `ReportError` for an unknown experiment or sweep, no finished trial, an ``out`` that
    exists and is not a report folder, or a ``baseline`` that names no point of the grid.
    """
    out_dir = Path(out) if out else DEFAULT_OUT / experiment
    _check_out(out_dir)
    uri = tracking.resolve_uri(tracking_uri)
    raw = tracking.load_runs(experiment, uri)
    if raw.empty:
        raise ReportError(f"experiment {experiment!r} has no finished runs (no runs at all)")
    runs = frame.tidy(raw)
    parents = frame.sweeps(runs)
    if sweep is not None:
        if sweep not in set(parents["run_id"]):
            known = ", ".join(f"{r.run_id} ({r.grid})" for r in parents.itertuples()) or "none"
            raise ReportError(
                f"unknown sweep {sweep!r} in experiment {experiment!r}; sweeps: {known}"
            )
        parents = parents[parents["run_id"] == sweep]
    trials = frame.trials(runs, sweep)
    states = frame.run_state(trials)
    if not (states == "ok").any():
        counts = ", ".join(f"{n} {s}" for s, n in states.value_counts().items()) or "no trials"
        where = f"sweep {sweep}" if sweep else f"experiment {experiment!r}"
        raise ReportError(f"{where} has no finished runs ({counts})")
    ok = trials["run_id"][states == "ok"]
    ious = tracking.load_ious(ok, uri)
    galleries = tracking.load_galleries(ok.iloc[: gallery.MAX_SETTINGS * 4], uri)
    try:
        report = assemble(experiment, trials, parents, uri, sweep, ious, baseline, galleries)
    except ConfigError as e:
        raise ReportError(str(e)) from None
    _write(report, out_dir)
    if log and len(parents):
        tracking.log_report(parents["run_id"].iloc[0], out_dir, uri)
    return out_dir


def assemble(
    experiment: str,
    trials: pd.DataFrame,
    parents: pd.DataFrame,
    uri: str,
    sweep: str | None = None,
    ious: dict | None = None,
    baseline: str | None = None,
    galleries: dict | None = None,
) -> document.Report:
    """Tables and figures of ``trials`` as a `document.Report` (figures rendered to PNG, PDF);
    ``ious`` (run id -> (object names, IoU matrix)) adds intervals and paired differences."""
    varying = frame.varying_keys(trials, parents)
    all_tables = [
        tables.main_table(trials, varying, ious),
        *ablation_tables.ablation_tables(trials, parents, ious, baseline),
    ]
    drawn, skipped = figures.make_figures(trials, varying, ious)
    drawn += gallery.gallery_figures(trials, varying, galleries or {})
    refs = [_render(d) for d in drawn]
    states = frame.run_state(trials).value_counts()
    counts = ", ".join(f"{n} {s.replace('ok', 'finished')}" for s, n in states.items())
    grids = ", ".join(f"`{r.run_id}` ({r.grid})" for r in parents.itertuples()) or "none"
    facts = (
        f"experiment `{experiment}`, tracking URI `{uri}`",
        f"sweep: {grids}" if sweep else f"all trials of the experiment; sweeps: {grids}",
        f"trials: {len(trials)} ({counts})",
        f"varying: {', '.join(varying) or 'nothing'}",
        *training_facts(trials),
        f"built {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
    )
    report = document.Report(
        experiment,
        facts,
        tuple(all_tables),
        tuple(refs),
        tuple(skipped),
        tuple(tables.failed_rows(trials)),
        conclusions.conclusions(all_tables),
    )
    return report


def training_facts(trials: pd.DataFrame) -> tuple[str, ...]:
    """How the trials' weights came about (the recipe a reader needs to judge the numbers)."""
    ok = trials[frame.run_state(trials) == "ok"]
    if "train.enabled" not in ok or not ok["train.enabled"].astype(str).eq("True").any():
        return ()
    ok = ok[ok["train.enabled"].astype(str) == "True"]
    out = []
    for key, g in ok.groupby(["train.steps", "train.ts"], dropna=False):
        steps, ts = (table_format.key_text(v) for v in key)
        base = pd.to_numeric(g.get("train.base_steps", pd.Series(dtype=float)), errors="coerce")
        base = int(base.max()) if base.notna().any() else 0
        lr = g["train.lr"].iloc[0] if "train.lr" in g else "?"
        base_lr = g["train.base_lr"].iloc[0] if "train.base_lr" in g else 0
        base_lr = lr if frame.is_missing(base_lr) or not float(base_lr) else base_lr
        base_ts = g["train.base_ts"].iloc[0] if "train.base_ts" in g else 0
        if not frame.is_missing(base_ts) and float(base_ts):
            ts_base = table_format.key_text(base_ts)
        else:
            ts_base = ts  # 0: the finetune's
        shas = sorted({str(v)[:12] for v in g.get("train.base_sha256", []) if str(v).strip()
                       and not frame.is_missing(v)})  # fmt: skip
        if shas and g.get("train.base", pd.Series(dtype=object)).astype(str).eq("pretrained").any():
            out.append(
                f"training: each trial finetunes {steps} steps at ts {ts} (lr {lr}) from its "
                f"preset's pretrained base (hrsam/pretrained, sha256 {', '.join(shas)})"
            )
        elif base:
            out.append(
                f"training: each trial finetunes {steps} steps at ts {ts} (lr {lr}) from a base "
                f"training of its preset shared by every trial and sweep ({base} steps at ts "
                f"{ts_base}, lr {base_lr}, the same recipe otherwise, the preset's own "
                "architecture)"
            )
        else:
            out.append(
                f"training: each trial trains {steps} steps at ts {ts} (lr {lr}) from scratch"
            )
    return tuple(out)


def _render(d: figures.Drawn) -> document.FigureRef:
    """PNG and PDF bytes of a figure; the layout is computed once, for the PNG."""
    png, pdf = io.BytesIO(), io.BytesIO()
    d.figure.savefig(png, format="png")
    d.figure.set_layout_engine("none")  # keep the constrained positions for the PDF
    d.figure.savefig(pdf, format="pdf", metadata={"CreationDate": None})
    return document.FigureRef(d.name, d.caption, png.getvalue(), pdf.getvalue())


def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir / "report.md").exists() and any(out_dir.iterdir()):
        raise ReportError(f"out={out_dir} exists and is not a report folder (no report.md)")


def _write(report: document.Report, out_dir: Path) -> None:
    """Writes into a temporary sibling folder, then swaps it in: never half a report."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tables").mkdir(parents=True)
    (tmp / "figures").mkdir()
    try:
        for t in report.tables:
            (tmp / "tables" / f"{t.name}.md").write_text(
                f"# {t.title}\n\n{table_format.to_markdown(t)}\n"
            )
            (tmp / "tables" / f"{t.name}.tex").write_text(table_format.to_latex(t))
            table_format.write_csv(t, tmp / "tables" / f"{t.name}.csv")
        if report.failed:
            pd.DataFrame(report.failed).to_csv(tmp / "tables" / "failed.csv", index=False)
        for f in report.figures:
            (tmp / "figures" / f"{f.name}.png").write_bytes(f.png)
            (tmp / "figures" / f"{f.name}.pdf").write_bytes(f.pdf)
        (tmp / "report.md").write_text(document.render_markdown(report))
        if report.conclusions:  # the sweep ends its results.md with them
            lines = [f"## {document.CONCLUSIONS}", "", *(f"- {c}" for c in report.conclusions)]
            (tmp / CONCLUSIONS_FILE).write_text("\n".join(lines) + "\n")
        (tmp / "report.html").write_text(document.render_html(report))
        _check_out(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _main(cfg: dict) -> int:
    if not cfg.get("experiment"):
        raise UsageError("experiment=<name> is required (python -m reports.build --help)")
    try:
        out = build(
            cfg["experiment"],
            cfg.get("sweep"),
            cfg.get("out"),
            cfg.get("mlflow.tracking_uri"),
            cfg["log"],
            cfg.get("baseline"),
        )
    except ReportError as e:
        raise UsageError(str(e)) from None
    print(f"report: {out / 'report.html'} (and report.md, tables/, figures/)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, __doc__, KEYS, DEFAULTS, _main)


if __name__ == "__main__":
    sys.exit(main())
