"""Time `reports.build.build` on an experiment of many runs (the report issue: 1,000 runs <= 15 s).

    python -m benchmarks.report_build                 # 1000 trial runs + the sweep's parent run
    python -m benchmarks.report_build --runs 200 --reps 1

Creates a fresh SQLite MLflow store in a temporary folder and logs a sweep the way
``ablations/`` does (a parent run tagged ``hrsam.role=sweep``, child runs with the trial tags,
flattened config params and the trial metrics; about 3 % FAILED without metrics), then times
``build()`` end to end: read the runs, tables, figures (PNG + PDF), report.md, report.html and
logging the report as artifacts of the parent run. Writes ``results/cpu/report_build.{md,csv}``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ablations import record as R
from ablations.record import TrialRecord
from benchmarks import _scaffold as scaffold
from benchmarks._timing import device_name
from hrsam import names

GRID = {
    "model.attention": ["global", "window", "shifted_pad", "shifted_kv", "swin"],
    "model.kernel": ["math", "sdpa"],
    "model.window_size": [4, 8, 12, 16, 24],
    "eval.ts": [512, 1024, 2048, 4096],
}
FIXED = {  # the rest of a trial's flattened config
    "model.preset": "hrsam_tiny",
    "model.attention": "window",
    "model.kernel": "math",
    "model.window_size": 16,
    "model.scan": "cpu",
    "model.cycle_repeats": 3,
    "model.anchor_sizes": None,
    "model.checkpoint": None,
    "train.enabled": True,
    "train.recipe": "interactive",
    "train.steps": 800,
    "train.ts": 512,
    "train.lr": 0.001,
    "train.warmup": 50,
    "train.batch": 1,
    "data.name": "synthetic",
    "data.root": "data/synthetic",
    "data.size": 512,
    "data.n_train": 64,
    "data.n_val": 16,
    "eval.ts": 512,
    "eval.protocol": "hrsam",
    "eval.max_clicks": 20,
    "bench.enabled": True,
    "bench.reps": 5,
    "device": "cpu",
}
KERNEL_SPEED = {"math": 1.0, "sdpa": 0.7}
PATTERN_COST = {"global": 0.0, "window": 1.0, "shifted_pad": 1.15, "shifted_kv": 1.05, "swin": 1.3}


def synthetic_trials(
    n: int, grid: dict = GRID, fail_rate: float = 0.03, seed: int = 0
) -> list[TrialRecord]:
    """``n`` trial records cycling over ``grid``'s points with seeds 42, 43, ... as repeats;
    plausible numbers, not measurements."""
    rng = np.random.default_rng(seed)
    points = list(itertools.product(*grid.values()))
    records = []
    for i in range(n):
        point = dict(zip(grid, points[i % len(points)], strict=True))
        params = {**FIXED, **point, "seed": 42 + i // len(points)}
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
        record = TrialRecord(
            f"t{i:05d}", "", "", "", f"{label}, seed={params['seed']}", params=params
        )
        if rng.random() < fail_rate:
            record.status = R.FAILED
            record.error = "RuntimeError: out of memory (synthetic failure)"
        else:
            record.metrics = _metrics(params, rng)
        records.append(record)
    return records


def _metrics(p: dict, rng) -> dict[str, float]:
    s = p["eval.ts"] / 512
    tokens = (p["eval.ts"] / 16) ** 2
    ws = p.get("model.window_size", 16)
    att = p.get("model.attention", "window")
    cost = tokens**2 / 4e5 if att == "global" else tokens * ws**2 * PATTERN_COST[att] / 2e3
    enc = (4.0 * s**2 + cost) * KERNEL_SPEED.get(p.get("model.kernel"), 1.0)
    enc *= rng.lognormal(0, 0.05)
    quality = 0.86 + 0.03 * np.log2(s) + 0.004 * np.log2(ws) + rng.normal(0, 0.005)
    m = {
        names.miou_at(k): min(0.99, quality + 0.1 * (1 - np.exp(-(k - 1) / 3)))
        for k in range(1, 21)
    }
    m.update(
        {
            names.NOC85: max(1.0, 6.5 - 8 * (quality - 0.8) + rng.normal(0, 0.1)),
            names.NOC90: max(1.0, 8.5 - 9 * (quality - 0.8) + rng.normal(0, 0.1)),
            names.NOC95: max(1.0, 12.5 - 10 * (quality - 0.8) + rng.normal(0, 0.1)),
            names.NOF85: float(rng.integers(0, 3)),
            names.NOF90: float(rng.integers(1, 5)),
            names.NOF95: float(rng.integers(2, 9)),
            names.BIOU: quality - 0.1,
            names.ENCODER_MS: enc,
            names.ENCODER_MS_IQR: 0.05 * enc,
            names.DECODER_MS: 3.0 + rng.normal(0, 0.1),
            names.SAT_S: (enc + 256 * 3.0) / 1e3,
            names.SPC_S: 0.003,
            names.PEAK_MEM_MB: 50 * s**2
            + (tokens**2 * 4 / 2**20 if att == "global" else 20 * s**2),
            names.PARAMS: 5.1e6,
            names.GFLOPS: 12.0 * s**2,
            names.TRAIN_S: 600.0,
        }
    )
    return {k: float(v) for k, v in m.items()}


def log_sweep(
    tracking_uri: str,
    experiment: str,
    grid: str,
    varying: list[str],
    records: list[TrialRecord],
    artifact_root: Path,
) -> str:
    """Logs ``records`` as one sweep (parent + child runs, named by `ablations.record`) in one
    batch per run; returns the parent run id. The experiment is created when missing, its
    artifacts under ``artifact_root``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=artifact_root.as_uri())
    )
    sweep_id = f"{grid}-{len(records)}"
    tags = R.parent_tags(sweep_id, grid, varying)
    parent = client.create_run(exp_id, run_name=grid, tags=tags).info.run_id
    params = [Param("grid", grid), Param("trials", str(len(records)))]
    client.log_batch(parent, params=params)
    now = int(time.time() * 1000)
    for r in records:
        r = replace(r, sweep_id=sweep_id, grid=grid, experiment=experiment)
        tags = r.mlflow_tags(parent)
        run_id = client.create_run(exp_id, run_name=r.label, tags=tags).info.run_id
        metrics = [Metric(k, v, now, 0) for k, v in r.mlflow_metrics().items()]
        params = [Param(k, v) for k, v in r.mlflow_params().items()]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id, R.MLFLOW_STATUS[r.status])
    return parent


@dataclass
class Measured:
    """What one benchmark run measured: the records it logged, the load when the builds started,
    the seconds of each in-process build and of one ``python -m reports.build``, and how many
    tables and figures the build wrote."""

    records: list[TrialRecord]
    load: float
    times: list[float]
    cli_s: float
    n_tables: int
    n_figures: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--runs`` or ``--reps`` below 1 is a one-line error (exit 2)."""
    p = scaffold.parser(
        "report_build",
        "Time reports.build on a synthetic experiment of many MLflow runs.",
        "--runs 1000 --reps 3",
    )
    p.add_argument("--runs", type=int, default=1000, help="trial runs (default 1000)")
    p.add_argument("--reps", type=int, default=3, help="timed builds (default 3)")
    p.add_argument("--target-s", type=float, default=15.0, help="pass mark (default 15 s)")
    scaffold.add_options(p, "out")
    args = scaffold.parse(p, argv)
    if args.runs < 1 or args.reps < 1:
        p.error("--runs and --reps must be >= 1")
    return args


def time_builds(runs: int, reps: int, machine: str) -> Measured:
    """Logs ``runs`` synthetic trials and their parent into a fresh SQLite store in a temporary
    folder, then times ``reps`` in-process builds and one build from the command line."""
    from reports.build import build

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp}/mlflow.db"
        start = time.perf_counter()
        records = synthetic_trials(runs)
        parent = log_sweep(uri, "bench", "bench_grid", list(GRID), records, tmp / "artifacts")
        setup_s = time.perf_counter() - start
        print(f"{machine}: logged {runs} runs + parent in {setup_s:.1f} s", flush=True)
        load = os.getloadavg()[0]  # the box may be shared: say how busy it was
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            out = build("bench", sweep=parent, out=tmp / "report", tracking_uri=uri)
            times.append(time.perf_counter() - start)
            print(f"  build {times[-1]:.2f} s", flush=True)
        command = [sys.executable, "-m", "reports.build", "experiment=bench", f"sweep={parent}",
               f"out={tmp / 'report_cli'}", f"tracking_uri={uri}", "log=false"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        cli_s = time.perf_counter() - start
        print(f"  python -m reports.build (imports included) {cli_s:.2f} s", flush=True)
        n_tables = len(list((out / "tables").glob("*.tex")))
        n_figures = len(list((out / "figures").glob("*.png")))
    return Measured(records, load, times, cli_s, n_tables, n_figures)


def result_row(m: Measured, runs: int, reps: int, target_s: float) -> dict:
    """The one result row: counts, build seconds (median, min, max), the CLI's and PASS / FAIL
    against ``target_s``."""
    median = statistics.median(m.times)
    return {
        "runs": runs,
        "failed": sum(r.failed for r in m.records),
        "tables": m.n_tables,
        "figures": m.n_figures,
        "build_s_median": f"{median:.2f}",
        "build_s_min": f"{min(m.times):.2f}",
        "build_s_max": f"{max(m.times):.2f}",
        "reps": reps,
        "cli_s": f"{m.cli_s:.2f}",
        "target_s": target_s,
        "status": "PASS" if median <= target_s else "FAIL",
    }


def write_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    machine: str,
    m: Measured,
    row: dict,
    table: str,
) -> None:
    """``report_build.csv`` (the row and the machine) and ``report_build.md`` (what was timed,
    the load, the verdict and the table) under ``--out`` or ``results/cpu``."""
    n_metrics = max(len(r.metrics) for r in m.records)
    settings = (
        f"- what: `reports.build.build()` end to end on a fresh SQLite MLflow store holding "
        f"{args.runs} trial runs of one sweep ({len(FIXED) + 1} params and "
        f"{n_metrics} metrics each, "
        f"{row['failed']} FAILED) and its parent: read the runs once, tables, figures (PNG + PDF),"
        f" report.md, report.html, log as artifacts of the parent run; median of {args.reps}\n"
        f"- load average (1 min) when the builds started: {m.load:.1f} on {os.cpu_count()} cores"
        " (logging the runs just before counts too)\n"
        "- cli_s: one `python -m reports.build ... log=false`, a fresh process (imports included)\n"
        f"- target: <= {args.target_s:g} s: **{row['status']}**\n"
    )
    md = scaffold.markdown(
        "Report build time", "report_build", argv, settings, table, machine=machine
    )
    fields, rows = [*row, "machine"], [{**row, "machine": machine}]
    scaffold.write_results(scaffold.results_dir(args.out), "report_build", fields, rows, md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = device_name(scaffold.CPU)
    measured = time_builds(args.runs, args.reps, machine)
    row = result_row(measured, args.runs, args.reps, args.target_s)
    header = list(row)
    table = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            "| " + " | ".join(str(v) for v in row.values()) + " |",
        ]
    )
    scaffold.show(table)
    write_results(args, argv, machine, measured, row, table)
    return 0 if row["status"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
