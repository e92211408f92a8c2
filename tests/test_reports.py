"""reports/: tables (values, order, bold, failed and missing cells, LaTeX), figures, the build from
a SQLite MLflow store, the CLI's errors, and the HTML report in headless Chromium (Playwright)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from PIL import Image

from ablations import record as R
from ablations.record import TrialRecord
from benchmarks.report_build import log_sweep, synthetic_trials
from reports import ablation_tables, figures, frame, table_format, tables
from reports import build as report_build
from tests.helpers import run, runs_frame

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# -- runs frames built here, the way mlflow.search_runs returns them ------------------------------


def unsupported_run(params: dict, reason: str) -> dict:
    """A run as `ablations.tracking` logs an UNSUPPORTED record: its tags from the record."""
    record = TrialRecord("t", "s", "g", "e", "l", R.UNSUPPORTED, reason=reason)
    tags = {f"tags.{k}": v for k, v in record.mlflow_tags("P").items()}
    return run(params, status=R.MLFLOW_STATUS[R.UNSUPPORTED], error=None, extra_tags=tags)


def parents_frame(grid: str = "g", varying: str = "", planned: int | None = None) -> pd.DataFrame:
    raw = {
        "run_id": ["P"],
        "status": ["FINISHED"],
        "start_time": [pd.Timestamp("2026-10-31")],
        "tags.hrsam.role": ["sweep"],
        "tags.hrsam.grid": [grid],
        "tags.hrsam.varying": [varying],
    }
    if planned is not None:
        raw["params.trials"] = [str(planned)]
    return frame.tidy(pd.DataFrame(raw))


def texts(table: table_format.Table) -> list[list[str]]:
    """Each row as its key texts then cell texts, bold marked ``*...*``."""
    return [
        [table_format.key_text(v) for v in point]
        + [
            f"*{table_format.cell_text(c, col)}*" if c.best else table_format.cell_text(c, col)
            for c, col in zip(cells, table.columns, strict=True)
        ]
        for point, cells in table.rows
    ]


def column(table: table_format.Table, header: str) -> list[str]:
    i = len(table.index) + [c.header for c in table.columns].index(header)
    return [row[i] for row in texts(table)]


# -- frame ----------------------------------------------------------------------------------------


def test_tidy_names_types_and_variant():
    t = frame.tidy(
        runs_frame(
            run({"model.preset": "hrsam_tiny", "model.attention": "shifted_kv",
                 "model.kernel": "sdpa", "eval.ts": 1024, "model.anchor_sizes": None},
                {"noc95": 5.0, "miou_at_5": 0.9}),
            run({"model.preset": "sam_vit_b", "model.attention": "global", "model.kernel": "sdpa",
                 "eval.ts": 2048, "model.anchor_sizes": [256, 512]}, {"noc95": 6.0}),
        )
    )  # fmt: skip
    assert t["eval.ts"].tolist() == [1024, 2048] and t["eval.ts"].dtype == "Int64"
    assert t["model.anchor_sizes"].tolist() == ["None", "[256, 512]"]
    assert t["variant"].tolist() == ["shifted_kv/sdpa", "sam_vit_b"]
    assert t["noc95"].tolist() == [5.0, 6.0] and t["role"].tolist() == ["trial", "trial"]


def test_trials_keep_the_finished_rerun_and_filter_by_sweep():
    raw = runs_frame(
        run({"eval.ts": 512}, status="FAILED", error="boom", trial_id="a"),
        run({"eval.ts": 512}, {"noc95": 4.0}, trial_id="a"),
        run({"eval.ts": 1024}, {"noc95": 3.0}, trial_id="b"),
    )
    raw.loc[2, "tags.mlflow.parentRunId"] = "other"
    t = frame.trials(frame.tidy(raw))
    assert sorted(t["trial_id"]) == ["a", "b"]
    assert t.set_index("trial_id").loc["a", "status"] == "FINISHED"
    assert frame.trials(frame.tidy(raw), sweep="other")["trial_id"].tolist() == ["b"]


# -- tables ---------------------------------------------------------------------------------------


def main_runs() -> pd.DataFrame:
    """SAM and HRSAM x two ts x two datasets; HRSAM @ 1024 on davis has two seeds."""
    runs = []
    for preset, base in (("hrsam_vit_b", 5.0), ("sam_vit_b", 7.0)):
        for ts in (2048, 1024):
            for ds in ("davis", "hqseg44k"):
                p = {"model.preset": preset, "model.attention": "window", "eval.ts": ts,
                     "data.name": ds, "model.kernel": "sdpa", "seed": 42}  # fmt: skip
                m = {"noc90": base - ts / 1024, "noc95": base + 2 - ts / 1024, "nof95": 10.0,
                     "miou_at_5": 0.8 + ts / 1e5, "encoder_ms": ts / 10 + base,
                     "sat_s": base}  # fmt: skip
                runs.append(run(p, m))
    extra = {**runs[0]["params"], "eval.ts": 1024, "data.name": "davis", "seed": 43}
    runs.append(run(extra, {**runs[2]["metrics"], "noc95": runs[2]["metrics"]["noc95"] + 1}))
    return frame.trials(frame.tidy(runs_frame(*runs)))


def test_main_table_layout_values_order_and_bold():
    t = tables.main_table(main_runs(), ["model.preset", "eval.ts", "data.name"])
    assert t.index == ("model", "ts", "kernel")
    assert [(c.group, c.metric) for c in t.columns[:5]] == [
        ("hqseg44k", "miou_at_5"), ("hqseg44k", "noc90"), ("hqseg44k", "noc95"),
        ("hqseg44k", "nof95"), ("davis", "miou_at_5"),
    ]  # fmt: skip
    assert [c.metric for c in t.columns[-4:]] == [
        "encoder_ms",
        "decoder_ms",
        "peak_mem_mb",
        "sat_s",
    ]
    # rows: SAM first (the baseline), ts ascending
    assert [r[:3] for r in texts(t)] == [
        ["sam_vit_b", "1024", "sdpa"], ["sam_vit_b", "2048", "sdpa"],
        ["hrsam_vit_b", "1024", "sdpa"], ["hrsam_vit_b", "2048", "sdpa"],
    ]  # fmt: skip
    assert "attention kernel: sdpa in every row." in t.notes
    # repeats: mean ± std; lower NoC is better, higher mIoU; ties are all bold
    assert column(t, "davis NoC95 (clicks)") == ["8.00", "7.00", "6.50 ± 0.71", "*5.00*"]
    assert column(t, "davis 5-mIoU (%)") == ["81.02", "*82.05*", "81.02 ± 0.00", "*82.05*"]
    assert column(t, "encoder (ms)")[2] == "*107.4 ± 0.0*"
    assert column(t, "SAT (s)") == ["7.00 ± 0.00"] * 2 + ["*5.00 ± 0.00*"] * 2  # over datasets
    # counts: whole numbers, also a mean of repeats that agree (one decimal only where they
    # differ); all equal: nothing bold
    assert column(t, "davis NoF95 (objects)") == ["10", "10", "10", "10"]


def test_main_table_marks_failed_and_missing_cells():
    runs = main_runs()
    runs = runs[~((runs["model.preset"] == "sam_vit_b") & (runs["data.name"] == "hqseg44k"))]
    failed = frame.tidy(
        runs_frame(
            run({"model.preset": "sam_vit_b", "model.attention": "window", "model.kernel": "sdpa",
                 "eval.ts": 4096, "data.name": "davis"}, status="FAILED", error="OOM")
        )
    )  # fmt: skip
    t = tables.main_table(pd.concat([runs, failed], ignore_index=True), [])
    rows = {tuple(r[:2]): r[3:] for r in texts(t)}
    assert rows[("sam_vit_b", "1024")][:4] == ["missing"] * 4  # no hqseg44k run
    # hqseg44k: missing; davis: 4 quality + 4 system columns failed
    assert rows[("sam_vit_b", "4096")] == ["missing"] * 4 + ["failed"] * 8
    assert any("missing: no run" in n for n in t.notes)


def test_main_table_names_each_rows_kernel_and_warns_when_families_differ():
    """Issue #29: latency cells stand beside the kernel that produced them; families timed on
    different kernels are called out in the notes."""
    runs = main_runs()
    runs.loc[runs["model.preset"] == "sam_vit_b", "model.kernel"] = "math"
    t = tables.main_table(runs, [])
    kernels = {(r[0], r[2]) for r in texts(t)}
    assert kernels == {("sam_vit_b", "math"), ("hrsam_vit_b", "sdpa")}
    [note] = [n for n in t.notes if n.startswith("attention kernels:")]
    assert "hrsam sdpa" in note and "sam math" in note and "compare kernels too" in note


def test_a_model_that_predicts_nothing_is_named_in_the_notes():
    """A run with mIoU below 1% after every click is a training that did not learn; the table
    says so beside its cells instead of ranking it."""
    from ablations import record as R

    assert R.predicts_nothing({"miou_at_1": 0.0, "miou_at_5": 0.004, "noc90": 20.0})
    assert not R.predicts_nothing({"miou@1": 0.0, "miou@5": 0.2})
    assert not R.predicts_nothing({"noc90": 20.0})  # no mIoU recorded: nothing to say
    runs = main_runs()
    runs.loc[runs["model.preset"] == "sam_vit_b", "miou_at_5"] = 0.0
    notes = [n for n in tables.main_table(runs, []).notes if n.startswith("EMPTY:")]
    assert len(notes) == 1 and "sam_vit_b (ts 1024, 2048)" in notes[0] and "hrsam" not in notes[0]
    assert not any(n.startswith("EMPTY:") for n in tables.main_table(main_runs(), []).notes)


def grid_runs(points: dict, repeats: int = 1) -> list[dict]:
    """Trials of a window_size x ts grid: ``points`` maps (ws, ts) to a status or metrics."""
    out = []
    for (ws, ts), what in points.items():
        for seed in range(repeats):
            p = {"model.window_size": ws, "eval.ts": ts, "seed": seed, "model.preset": "hrsam_tiny",
                 "model.attention": "window", "model.kernel": "sdpa"}  # fmt: skip
            if isinstance(what, str) and what.startswith("unsupported: "):
                out.append(unsupported_run(p, what.removeprefix("unsupported: ")))
            elif isinstance(what, str):
                out.append(run(p, status="FAILED", error=what))
            else:
                out.append(run(p, {k: v * (1 + 0.1 * seed) for k, v in what.items()}))
    return out


def test_ablation_table_rows_are_every_grid_point():
    points = {
        (8, 512): {"noc95": 6.0, "miou_at_5": 0.8, "encoder_ms": 10.0},
        (16, 512): {"noc95": 5.0, "miou_at_5": 0.9, "encoder_ms": 12.0},
        (8, 1024): "RuntimeError: CUDA out of memory",
        (32, 1024): "unsupported: flash needs CUDA",
        # (16, 1024), (32, 512) have no run
    }
    raw = runs_frame(*grid_runs(points, repeats=2))
    trials = frame.trials(frame.tidy(raw))
    parents = parents_frame(varying="model.window_size,eval.ts,seed")
    [t] = ablation_tables.ablation_tables(trials, parents)
    assert t.index == ("window_size", "ts")
    assert [c.metric for c in t.columns] == ["miou_at_5", "noc95", "encoder_ms"]
    assert texts(t) == [
        ["8", "512", "84.00 ± 5.66", "6.30 ± 0.42", "*10.5 ± 0.7*"],
        ["8", "1024", "failed", "failed", "failed"],
        ["16", "512", "*94.50 ± 6.36*", "*5.25 ± 0.35*", "12.6 ± 0.8"],
        ["16", "1024", "missing", "missing", "missing"],
        ["32", "512", "missing", "missing", "missing"],
        ["32", "1024", *["unsupported: flash needs CUDA"] * 3],
    ]
    md = table_format.to_markdown(t)
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 6  # header + rows
    assert "**5.25 ± 0.35**" in md and "| missing |" in md


def test_timings_taken_on_a_shared_cpu_are_marked():
    quiet = run({"model.window_size": 8}, {"encoder_ms": 10.0, "noc95": 5.0})
    busy = run({"model.window_size": 16}, {"encoder_ms": 30.0, "noc95": 5.0},
               extra_tags={"tags.timing_shared": "True"})  # fmt: skip
    trials = frame.trials(frame.tidy(runs_frame(quiet, busy)))
    [t] = ablation_tables.ablation_tables(trials, parents_frame(varying="model.window_size"))
    assert column(t, "encoder (ms)") == ["*10.0*", "30.0‡"]
    assert column(t, "NoC95 (clicks)") == ["5.00", "5.00"]  # quality is not a timing
    assert any(n.startswith("‡: timed while another trial ran") for n in t.notes)
    assert r"30.0$^\ddagger$" in table_format.to_latex(t)


def test_a_shared_timing_is_never_the_best_even_when_it_is_the_lowest():
    quiet = run({"model.window_size": 8}, {"encoder_ms": 10.0, "noc95": 5.0})
    busy = run({"model.window_size": 16}, {"encoder_ms": 4.0, "noc95": 5.0},
               extra_tags={"tags.timing_shared": "True"})  # fmt: skip
    trials = frame.trials(frame.tidy(runs_frame(quiet, busy)))
    [t] = ablation_tables.ablation_tables(trials, parents_frame(varying="model.window_size"))
    assert column(t, "encoder (ms)") == ["*10.0*", "4.0‡"]  # the best of the exclusive timings


def test_partial_failure_is_marked():
    points = {(8, 512): {"noc95": 6.0}, (16, 512): {"noc95": 5.0}}
    runs = grid_runs(points, repeats=2)
    runs[1] = run(runs[1]["params"], status="FAILED", error="killed")
    trials = frame.trials(frame.tidy(runs_frame(*runs)))
    t = ablation_tables.ablation_table(trials, ["model.window_size"], ["noc95"], "x")
    assert texts(t) == [["8", "6.00†"], ["16", "*5.25 ± 0.35*"]]
    assert any("did not finish" in n for n in t.notes)


def test_include_grid_without_missing_points_lists_only_the_points_run():
    """Grids with ``include`` points are not products: when the parent's planned trial count is
    met there is nothing missing, and no product row is invented."""
    runs = [
        run({"model.preset": "hrsam_tiny", "model.anchor_sizes": None}, {"noc95": 6.0}),
        run({"model.preset": "hrsampp_tiny", "model.anchor_sizes": [256]}, {"noc95": 5.0}),
        run({"model.preset": "hrsampp_tiny", "model.anchor_sizes": [128, 256]}, {"noc95": 4.0}),
    ]
    trials = frame.trials(frame.tidy(runs_frame(*runs)))
    varying = "model.preset,model.anchor_sizes"
    [t] = ablation_tables.ablation_tables(trials, parents_frame(varying=varying, planned=3))
    assert [r[:2] for r in texts(t)] == [
        ["hrsam_tiny", "None"], ["hrsampp_tiny", "[128, 256]"], ["hrsampp_tiny", "[256]"],
    ]  # fmt: skip
    [t] = ablation_tables.ablation_tables(trials, parents_frame(varying=varying, planned=4))
    assert len(t.rows) == 6 and sum(r[2] == "missing" for r in texts(t)) == 3
    assert t.notes[0] == "1 of 4 planned trials have no run."


def test_latex_is_escaped_balanced_and_booktabs():
    points = {(8, 512): {"noc95": 6.0}, (16, 512): "boom"}
    runs = grid_runs(points)
    for r in runs:
        r["params"]["data.name"] = "hq_seg 50% A&B"
    trials = frame.trials(frame.tidy(runs_frame(*runs, grid="win_size")))
    [t] = ablation_tables.ablation_tables(
        trials, parents_frame("win_size", "model.window_size,data.name")
    )
    tex = table_format.to_latex(t)
    assert re.findall(r"\\begin\{(\w+)\}", tex) == ["table", "tabular"]
    assert re.findall(r"\\end\{(\w+)\}", tex) == ["tabular", "table"]
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    assert r"hq\_seg 50\% A\&B" in tex and r"window\_size" in tex
    assert r"\textit{failed}" in tex
    body = re.sub(r"\\label\{[^}]*\}", "", tex.split("\n", 1)[1])  # labels may hold _
    body = re.sub(r"\\[_%&$#{}]", "", body).replace(" & ", " ")  # drop escapes, separators
    assert not re.search(r"[_%&]", body)
    row = next(line for line in tex.splitlines() if line.startswith("8 &"))
    assert row.count(" & ") == 2 and row.endswith(r"\\")


def test_latex_main_table_groups_datasets_with_cmidrule():
    t = tables.main_table(main_runs(), [])
    tex = table_format.to_latex(t)
    assert r"\multicolumn{4}{c}{hqseg44k} & \multicolumn{4}{c}{davis}" in tex
    assert r"\cmidrule(lr){4-7} \cmidrule(lr){8-11}" in tex
    assert r"\textbf{5.00}" in tex and r"$\pm$" in tex
    assert "±" not in tex and "†" not in tex  # unicode only as LaTeX commands
    n_cols = 3 + len(t.columns)
    assert rf"\begin{{tabular}}{{{'l' * 3}{'r' * len(t.columns)}}}" in tex
    for line in tex.splitlines():
        if line.startswith(("sam", "hrsam")):
            assert line.count(" & ") == n_cols - 1


def test_csv_keeps_numbers_and_states():
    points = {(8, 512): {"noc95": 6.0}, (16, 512): "boom"}
    trials = frame.trials(frame.tidy(runs_frame(*grid_runs(points))))
    t = ablation_tables.ablation_table(trials, ["model.window_size", "eval.ts"], ["noc95"], "x")
    fields, rows = table_format.csv_rows(t)
    assert fields == ["window_size", "ts", "noc95", "noc95 std", "noc95 lo", "noc95 hi", "noc95 n"]
    assert [(r["window_size"], r["noc95"], r["noc95 n"]) for r in rows] == [
        ("8", "6.0", 1), ("16", "failed", 0),
    ]  # fmt: skip


# -- figures --------------------------------------------------------------------------------------


def test_pareto_front():
    x = np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    y = np.array([9.0, 5.0, 6.0, 1.0, 5.0])
    assert figures.pareto_front(x, y).tolist() == [0, 1, 3]


def figure_trials(ts_values) -> pd.DataFrame:
    grid = {"model.attention": ["window", "shifted_kv"], "eval.ts": list(ts_values)}
    records = synthetic_trials(2 * len(grid["model.attention"]) * len(ts_values), grid, 0.0)
    return frame.trials(
        frame.tidy(runs_frame(*(run(r.params, r.mlflow_metrics()) for r in records)))
    )


def test_figures_have_labelled_axes_with_units():
    drawn, skipped = figures.make_figures(
        figure_trials([512, 1024]), ["model.attention", "eval.ts"]
    )
    by_name = {d.name: d.figure for d in drawn}
    assert set(by_name) == {
        "latency_vs_ts", "memory_vs_ts", "noc_vs_ts", "miou_vs_clicks", "noc_vs_latency",
    }  # fmt: skip
    labels = {n: (f.axes[0].get_xlabel(), f.axes[0].get_ylabel()) for n, f in by_name.items()}
    assert labels["latency_vs_ts"] == ("ts (px)", "encoder latency (ms)")
    assert labels["memory_vs_ts"] == ("ts (px)", "peak memory (MB)")
    assert labels["noc_vs_ts"] == ("ts (px)", "NoC90 (clicks)")
    assert by_name["noc_vs_ts"].axes[1].get_ylabel() == "NoC95 (clicks)"
    assert labels["miou_vs_clicks"] == ("clicks", "mIoU (%)")
    assert labels["noc_vs_latency"] == ("encoder latency (ms)", "NoC95 (clicks)")
    assert by_name["latency_vs_ts"].axes[0].get_xscale() == "log"
    assert by_name["latency_vs_ts"].axes[0].get_yscale() == "log"
    reasons = {s.name: s.reason for s in skipped}
    assert "window_size takes < 2 values" in reasons["bars_window_size"]
    # one colour per variant across figures
    colors = figures.variant_colors(["window/math", "shifted_kv/math"])
    line = by_name["latency_vs_ts"].axes[0].get_lines()[0]
    assert tuple(line.get_color()[:3]) in {tuple(c) for c in colors.values()}


def test_figures_need_two_ts_values():
    _, skipped = figures.make_figures(figure_trials([1024]), ["model.attention"])
    reasons = {s.name: s.reason for s in skipped}
    assert reasons["latency_vs_ts"] == "needs runs at >= 2 ts values (found 1: 1024)"
    assert "noc_vs_ts" in reasons and "memory_vs_ts" in reasons


def test_window_size_bars_with_spread():
    points = {(ws, 512): {"noc95": 6.0 - ws / 10, "encoder_ms": ws} for ws in (8, 16)}
    trials = frame.trials(frame.tidy(runs_frame(*grid_runs(points, repeats=3))))
    fig, caption = figures.ablation_bars(trials, ["model.window_size"], "model.window_size", {})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "window_size (tokens)" and ax.get_ylabel() == "NoC95 (clicks)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "16"]
    [bars] = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and len(bars.errorbar.lines[2][0].get_segments()) == 2  # std of 3 seeds
    assert "error bars = std" in caption


# -- build from MLflow ----------------------------------------------------------------------------

WINDOW_GRID = {"model.window_size": [8, 16], "eval.ts": [512, 1024]}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A SQLite MLflow store: a window_size x ts sweep (2 seeds, one trial FAILED), an
    experiment whose only trial failed and an empty one."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    records = synthetic_trials(8, WINDOW_GRID, fail_rate=0.0)
    records[-1] = replace(
        records[-1], status="FAILED", error="RuntimeError: out of memory", metrics={}
    )
    parent = log_sweep(uri, "window_size", "window_size", list(WINDOW_GRID), records, root / "a")
    log_sweep(uri, "broken", "broken", [], [records[-1]], root / "b")
    MlflowClient(uri).create_experiment("empty", artifact_location=(root / "c").as_uri())
    return {"uri": uri, "parent": parent, "root": root}


@pytest.fixture(scope="module")
def report_dir(store) -> Path:
    out = store["root"] / "report"
    assert report_build.build("window_size", store["parent"], out, store["uri"]) == out
    return out


@pytest.mark.slow
def test_build_writes_tables_figures_and_reports(report_dir):
    names = sorted(p.name for p in (report_dir / "tables").iterdir())
    assert names == [
        "ablation_window_size.csv", "ablation_window_size.md", "ablation_window_size.tex",
        "failed.csv", "main.csv", "main.md", "main.tex",
    ]  # fmt: skip
    md = (report_dir / "report.md").read_text()
    assert "## Main results" in md and "## Ablation: window_size" in md
    assert "trials: 8 (7 finished, 1 failed)" in md
    assert "- `bars_scale`: anchor_sizes takes < 2 values" in md  # skipped, with the reason
    assert "RuntimeError: out of memory" in md
    pngs = sorted((report_dir / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"latency_vs_ts", "noc_vs_latency", "bars_window_size"}
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as im:
            im.verify()
        assert Image.open(png).size[0] > 300
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf[:5] == b"%PDF-" and b"%%EOF" in pdf[-32:] and len(pdf) > 2000
        assert f"(figures/{png.name})" in md


@pytest.mark.slow
def test_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == len(list((report_dir / "figures").glob("*.png")))
    assert not re.search(r"https?://|@import|url\(", html)
    body = re.sub(r"<style>.*?</style>|<script>.*?</script>", "", html, flags=re.S)
    assert "`" not in body and "<code>" in body  # Markdown's inline code rendered, not shown
    assert '<div class="wide"><table>' in html  # a wide table scrolls inside the page


def test_inline_html_renders_code_and_escapes_the_rest():
    assert table_format.inline_html("a `x<y` b") == "a <code>x&lt;y</code> b"
    assert table_format.inline_html("one ` tick") == "one ` tick"


@pytest.mark.slow
def test_build_logs_the_report_to_the_parent_run(store, report_dir):
    from mlflow import MlflowClient

    logged = {a.path for a in MlflowClient(store["uri"]).list_artifacts(store["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/tables", "report/figures"} <= logged


@pytest.mark.slow
def test_cli_errors_are_one_line_with_exit_code_2(store, tmp_path, capsys):
    uri = f"mlflow.tracking_uri={store['uri']}"
    cases = {
        ("experiment=nope", uri): "unknown experiment 'nope'; experiments in",
        ("experiment=broken", uri): "has no finished runs (1 failed)",
        ("experiment=empty", uri): "has no finished runs (no runs at all)",
        ("experimnt=window_size", uri): "did you mean 'experiment'?",
        ("experiment=window_size", "sweep=abc", uri): "unknown sweep 'abc'",
        (uri,): "experiment=<name> is required",
        ("experiment=x", f"mlflow.tracking_uri=sqlite:///{tmp_path}/none.db"): "no MLflow database",
    }
    for argv, message in cases.items():
        assert report_build.main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert report_build.main(["experiment=nope", uri]) == 2
    err = capsys.readouterr().err
    assert "broken" in err and "window_size" in err  # lists the experiments there are
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_cli_help_and_out_guard(store, tmp_path, capsys):
    assert report_build.main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("experiment", "sweep", "out", "tracking_uri", "python -m reports.build"):
        assert text in out
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    argv = ["experiment=window_size", f"out={precious}", f"mlflow.tracking_uri={store['uri']}"]
    assert report_build.main(argv) == 2
    assert "not a report folder" in capsys.readouterr().err
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_cli_builds_the_whole_experiment(store, tmp_path, capsys):
    out = tmp_path / "rep"
    argv = [
        "experiment=window_size",
        f"out={out}",
        f"mlflow.tracking_uri={store['uri']}",
        "log=false",
    ]
    assert report_build.main(argv) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "tables" / "main.csv").read_text())))
    assert [(r["model"], r["ts"], r["window_size"]) for r in rows] == [
        ("hrsam_tiny", "512", "8"), ("hrsam_tiny", "512", "16"),
        ("hrsam_tiny", "1024", "8"), ("hrsam_tiny", "1024", "16"),
    ]  # fmt: skip
    assert [r["synthetic noc95 n"] for r in rows] == ["2", "2", "2", "1"]


# -- the HTML report in a headless browser (Playwright on the system Chromium: tests/conftest.py)


@pytest.mark.external
@pytest.mark.browser_context_args(viewport={"width": 1280, "height": 2000})
def test_html_opens_in_headless_chromium(report_dir, page):
    uncaught = []
    page.on("pageerror", lambda error: uncaught.append(str(error)))
    page.goto((report_dir / "report.html").as_uri())
    root = page.locator("html[data-check='done']")  # the report's own check, once loaded
    root.wait_for(state="attached")
    attrs = {k: root.get_attribute(f"data-{k}") for k in ("images", "images-loaded", "errors")}
    n_png = len(list((report_dir / "figures").glob("*.png")))
    assert int(attrs["images"]) == n_png > 0
    assert attrs["images-loaded"] == attrs["images"]
    assert attrs["errors"] == ""
    assert uncaught == []
    shot = report_dir / "screenshot.png"
    page.screenshot(path=shot)
    assert shot.read_bytes()[:8] == PNG_MAGIC
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank page
