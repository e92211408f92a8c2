"""Run an ablation grid: ``python -m ablations.sweep grid=<name> [key=value ...] [--dry-run]``

    python -m ablations.sweep grid=window_size                 # the embedded default (CPU)
    python -m ablations.sweep grid=window_size --dry-run       # the plan, nothing written
    python -m ablations.sweep grid=attention executor=debug    # in-process, one after another
    python -m ablations.sweep grid=resolution eval.ts=1024     # a key set here is not swept
    python -m ablations.sweep grid=paper_main profile=paper executor.slurm.preset=h100 \\
        data.roots.davis=/data/DAVIS data.roots.hqseg44k=/data/HQSeg44K \\
        checkpoints.hrsam_vit_b=hrsam.pth mlflow.tracking_uri=http://login1:5000

Expands the grid to trials (trial_id = hash of the resolved config), prints the plan, skips the
trials this experiment already finished, creates the MLflow experiment and the sweep's parent run
before any job starts, runs the trials (submitit: debug, local or slurm) with a status line, and
ends with the results table and the report. Exit code 0 when every trial finished, 1 naming the
failed ones, 2 for a bad command line (nothing is written or submitted).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

from ablations import config as C
from ablations import preflight, tracking
from ablations import record as R
from ablations import spec as S
from ablations.launch import Tracked, run
from ablations.record import TrialRecord
from ablations.trial import SweepRun, TrialJob
from hrsam import names

FLAGS = ("--dry-run", "--help", "-h")
TABLE_METRICS = (
    names.NOC85,
    names.NOC90,
    names.NOC95,
    names.NOF90,
    names.MIOU1,
    names.MIOU5,
    names.CLICK_GAIN,
    names.NEG_CLICK_DELTA,
    names.ORACLE_GAIN,
    names.ENCODER_MS,
    names.PEAK_MEM_MB,
)
INTERVAL_METRICS = (names.NOC90,)  # shown with their 95% interval over objects (reports.stats)
# shown with the interval the trial recorded beside them (``<name>_lo`` / ``<name>_hi``)
RECORDED_INTERVALS = (names.CLICK_GAIN,)


def plan_table(sweep: S.Sweep, status: dict[str, str]) -> str:
    rows = [["#", "trial", *(sweep.varying or ["point"]), "weights", "status"]]
    for i, t in enumerate(sweep.trials, 1):
        values = [C.fmt(C.get(t.config, k)) for k in sweep.varying] or [t.label]
        ckpt = t.config["model"]["checkpoint"] or "random weights"
        weights = f"train {t.train_key}{_from_base(t.base)}" if t.train_key else ckpt
        rows.append([str(i), t.trial_id, *values, weights, status.get(t.trial_id, "pending")])
    return _markdown(rows)


def _from_base(base: S.Base | None) -> str:
    """Where a training starts, for the plan: pretrained weights by sha256, a shared base."""
    if base is None:
        return ""
    if base.pretrained:
        return f" from pretrained {base.preset} sha256 {base.sha256[:12]}"
    return f" from base {base.key} ({base.train.steps} steps)"


def results_table(sweep: S.Sweep, records: dict[str, TrialRecord | None]) -> str:
    """The trials' headline metrics; NoC90 with its 95% bootstrap interval over the objects
    (from the trial folder's ``ious.csv``), NoF90 out of the objects evaluated."""
    from hrsam.interactive.metrics import mean_interval, per_object

    with_ci = (*INTERVAL_METRICS, *RECORDED_INTERVALS)
    head = [names.label(k) + (" [95% CI]" if k in with_ci else "") for k in TABLE_METRICS]
    rows = [[*(sweep.varying or ["trial"]), *head, "kernel", "status"]]
    shared_any = False
    for t in sweep.trials:
        r = records.get(t.trial_id)
        m = r.metrics if r else {}
        values = [C.fmt(C.get(t.config, k)) for k in sweep.varying] or [t.label]
        ious = _ious(sweep.folder / "trials" / t.trial_id) if r and r.ok else None
        cells = []
        for k in TABLE_METRICS:
            text = _num(m.get(k))
            if ious is not None and k in INTERVAL_METRICS:
                _, lo, hi = mean_interval(per_object(ious, k))
                text += f" [{_num(lo)}, {_num(hi)}]"
            elif k in RECORDED_INTERVALS and m.get(names.interval(k)[0]) is not None:
                lo, hi = names.interval(k)
                text += f" [{_num(m[lo])}, {_num(m[hi])}]"
            elif ious is not None and names.is_count(k) and m.get(k) is not None:
                text = f"{int(m[k])}/{len(ious)}"
            if k in names.TIMING_PROTOCOL and r is not None and R.timing_shared(r) and text != "-":
                text, shared_any = text + R.SHARED_MARK, True
            cells.append(text)
        status = "missing" if r is None else r.headline() if not r.ok else r.status
        if m.get(names.UPSAMPLED):  # evaluated above the images' native size: not high-resolution
            status += f" (UPSAMPLED: {m[names.UPSAMPLED]:.0%} of objects)"
        if r is not None and r.ok and R.predicts_nothing(m):
            status += f" (EMPTY: mIoU < {R.EMPTY_MIOU:g} after every click)"
        kernel = str(r.resolved.get("model.kernel") or "-") if r else "-"  # the timings' kernel
        rows.append([*values, *cells, kernel, status])
    note = (
        "\n[95% CI]: over the objects of the row's one training seed (each row is one trial); "
        "repeats=3 and the report give intervals that cover the seed too."
    )
    note += f"\n{R.SHARED_MARK} {R.SHARED_NOTE}" if shared_any else ""
    return _markdown(rows) + note


def _ious(folder: Path):
    """The trial's (objects x clicks) IoU matrix, or None."""
    from hrsam.interactive.evaluate import read_ious

    table = read_ious(folder / "ious.csv")
    return None if table is None else table[1]


def _num(v) -> str:
    if v is None or v != v:  # None or NaN
        return "-"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _markdown(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(rows[0]), sep, *(fmt(r) for r in rows[1:])])


def prepare_data(sweep: S.Sweep) -> None:
    """Generates each synthetic dataset the trials use, once, here (jobs would race)."""
    from hrsam.cli import Progress

    seen = set()
    for t in sweep.trials:
        data = t.data
        key = (data.root, *data.synthetic_spec().values())
        if data.name != "synthetic" or key in seen:
            continue
        seen.add(key)
        bar = Progress(data.n_train + data.n_val, "img")
        data.prepare(progress=lambda i, n, bar=bar: bar(i, "synthetic data"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print(f"grids: {', '.join(C.list_grids())}")
        print(f"profiles: {', '.join(C.list_profiles())}; executors: {', '.join(C.EXECUTORS)}")
        print("keys and their defaults (the schema's, then ablations/conf/defaults.yaml's):")
        cfg, _ = C.compose({"grid": C.list_grids()[0]})
        for key, value in C.flatten(cfg).items():
            if key != "grid":
                print(f"  {key}={C.fmt(value) if value is not None else 'null'}")
        return 0
    try:
        overrides, flags = C.parse_args(argv)
        for flag in flags:
            if flag not in FLAGS:
                close = difflib.get_close_matches(flag, FLAGS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "options: --dry-run, --help"
                raise C.ConfigError(f"unknown option {flag!r}; {hint}")
        cfg, grid_spec = C.compose(overrides)
        sweep = S.expand(cfg, grid_spec)
        S.check_checkpoints(sweep)
        devices = {t.device for t in sweep.trials}
        preflight.check(cfg, sweep.folder, devices, dry_run="--dry-run" in flags)
    except C.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = sweep.folder
    records = {t.trial_id: TrialRecord.load(folder / "trials" / t.trial_id) for t in sweep.trials}
    status = {k: r.status.lower() for k, r in records.items() if r}
    print(f"sweep {sweep.grid}: {sweep.description}")
    print(f"experiment {sweep.experiment!r}, {len(sweep.trials)} trials, folder {folder}")
    print(plan_table(sweep, status))
    if "--dry-run" in flags:
        print("dry run: nothing written or submitted")
        return 0
    return execute(sweep, records, " ".join(["python -m ablations.sweep", *argv]))


def execute(sweep: S.Sweep, records: dict[str, TrialRecord | None], command: str = "") -> int:
    """Runs the trials that have no finished record (the MLflow parent run first), then writes
    ``results.md``, builds the report and prints where to look. Exit code 1 when a trial failed."""
    cfg, folder = sweep.config, sweep.folder
    uri = tracking.absolute_uri(cfg["mlflow"]["tracking_uri"])
    folder.mkdir(parents=True, exist_ok=True)
    prepare_data(sweep)
    parent = _start_sweep(sweep, uri, command)
    todo = _jobs(sweep, records, uri, parent)
    _write_sweep_json(sweep, parent, uri, [])

    def on_done(t: Tracked) -> None:
        if t.error:  # died outside the trial: record it as a failed trial
            record = _lost_trial_record(t)
            tracking.log_trial(uri, sweep.experiment, parent, record, None)
            _write_failed_folder(folder, record)

    tracked = run(cfg, todo, folder, on_done)
    _write_sweep_json(sweep, parent, uri, tracked)
    records = {t.trial_id: TrialRecord.load(folder / "trials" / t.trial_id) for t in sweep.trials}
    _tidy(folder, [t for t, r in records.items() if r is not None])
    # unsupported is an answer about this device, not a crash: it does not fail the sweep
    failed = [t for t in sweep.trials if records[t.trial_id] is None or records[t.trial_id].failed]
    tracking.end_sweep(uri, parent, ok=not failed)
    table = results_table(sweep, records)
    (folder / "results.md").write_text(table + "\n")
    print(table)
    print(f"trial folders: {folder / 'trials'}")
    if cfg["report"]["enabled"]:
        _report(sweep, parent, uri, folder / "results.md")
    _print_links(sweep, uri)
    return _print_outcome(sweep, records, failed)


def _start_sweep(sweep: S.Sweep, uri: str, command: str) -> str:
    """The sweep's MLflow parent run (reused when the sweep runs again); returns its id."""
    cfg = sweep.config
    return tracking.start_sweep(
        uri,
        sweep.experiment,
        sweep.sweep_id,
        sweep.grid,
        {
            "grid": sweep.grid,
            "profile": cfg["profile"],
            "trials": len(sweep.trials),
            **C.flatten({"executor": cfg["executor"]}),
            **({"report.baseline": b} if (b := cfg["report"]["baseline"]) else {}),
        },
        sweep.varying,
        sweep.folder / "mlartifacts",
        command,
    )


def _jobs(
    sweep: S.Sweep, records: dict[str, TrialRecord | None], uri: str, parent: str
) -> list[TrialJob]:
    """The jobs of the trials without a finished record; a finished trial that MLflow lacks is
    logged again from its folder."""
    cfg, folder = sweep.config, sweep.folder
    logged = tracking.trial_runs(uri, sweep.experiment, sweep.sweep_id)
    threads = cfg["executor"]["cpus_per_task"] if cfg["executor"]["name"] != "debug" else 0
    if threads:  # a job's OpenMP / MKL pools match the cores it was given (inherited by jobs)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    where = SweepRun(
        sweep.sweep_id, sweep.grid, sweep.experiment, str(folder.resolve()), uri, parent
    )
    todo = []
    for t in sweep.trials:
        record = records.get(t.trial_id)
        if record and record.ok:
            if logged.get(t.trial_id, ("", ""))[1] != "FINISHED":  # folder ahead of MLflow
                tracking.log_trial(
                    uri, sweep.experiment, parent, record, folder / "trials" / t.trial_id
                )
            continue
        todo.append(TrialJob(t, where, threads=threads, cwd=os.getcwd()))
    skipped = len(sweep.trials) - len(todo)
    if skipped:
        print(f"{skipped} trial(s) already finished in this experiment: skipped")
    return todo


def _print_links(sweep: S.Sweep, uri: str) -> None:
    """How to open the sweep's runs in the MLflow UI."""
    db = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    page = tracking.runs_page(uri, sweep.experiment, sweep.sweep_id, sweep.varying)
    if db:
        print(f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{db} --host 127.0.0.1")
        print(f"  (or make mlflow-ui), then the runs: http://127.0.0.1:5000/{page}")
    else:
        print(f"MLflow: {uri.rstrip('/')}/{page}")


def _print_outcome(sweep: S.Sweep, records: dict, failed: list) -> int:
    """One line per unsupported or failed trial, then the count; the sweep's exit code."""
    unsupported = [
        t
        for t in sweep.trials
        if records[t.trial_id] and records[t.trial_id].status == R.UNSUPPORTED
    ]
    for t in unsupported:
        print(f"UNSUPPORTED {t.trial_id} ({t.label}): {records[t.trial_id].reason}")
    for t in failed:
        r = records[t.trial_id]
        print(
            f"FAILED {t.trial_id} ({t.label}): {r.headline() if r else 'no result'}",
            file=sys.stderr,
        )
    n = len(sweep.trials)
    summary = f"{n - len(failed) - len(unsupported)} of {n} trials finished"
    if unsupported:
        summary += f", {len(unsupported)} unsupported on this device (not a failure)"
    if failed:
        print(f"{summary}, {len(failed)} failed", file=sys.stderr)
        return 1
    print(summary)
    return 0


def report_builder(spec: str):
    """The function ``module:function`` names (``report.builder``), imported by its path: the
    same with and without an install of the project."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _report(sweep: S.Sweep, parent: str, uri: str, results: Path) -> None:
    """The sweep's report, by the builder ``report.builder`` names (the reports package's, by
    default): ablations does not import reports. The sentences it ends with (what the paired
    intervals show, ``conclusions.md``) end ``results`` and the console table too."""
    spec = sweep.config["report"]["builder"]
    try:
        build = report_builder(spec)
    except (ImportError, AttributeError, ValueError) as e:
        print(f"report: report.builder={spec!r} cannot be imported ({e}); see results.md")
        return
    try:
        out = build(sweep.experiment, sweep=parent, tracking_uri=uri)
        if (out / "conclusions.md").exists():
            text = (out / "conclusions.md").read_text()
            results.write_text(results.read_text() + "\n" + text)
            print(text, end="")
        print(f"report: {out / 'report.html'} (and report.md)")
    except Exception as e:  # the sweep's results stand without a report
        print(f"report: could not be built ({type(e).__name__}: {e})", file=sys.stderr)


def _lost_trial_record(t: Tracked) -> TrialRecord:
    j = t.trial
    record = R.started(j.spec, j.sweep.sweep_id, j.sweep.grid, j.sweep.experiment)
    record.status, record.error = R.FAILED, t.error
    return record


def _write_failed_folder(folder: Path, record: TrialRecord) -> None:
    final = folder / "trials" / record.trial_id
    if TrialRecord.load(final):
        return
    stage = folder / "trials" / f".{record.trial_id}.tmp-lost"
    stage.mkdir(parents=True, exist_ok=True)
    record.save(stage)
    stage.rename(final)


def _tidy(folder: Path, ended: list[str]) -> None:
    """Removes what the jobs leave once every one of them ended: the locks of trials with a
    record, and empty job folders (submitit's ``jobs/%j`` for in-process runs)."""
    for trial_id in ended:
        (folder / "trials" / f".{trial_id}.lock").unlink(missing_ok=True)
    jobs = folder / "jobs"
    for d in sorted(jobs.rglob("*"), reverse=True) if jobs.is_dir() else []:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    if jobs.is_dir() and not any(jobs.iterdir()):
        jobs.rmdir()


def _write_sweep_json(sweep: S.Sweep, parent: str, uri: str, tracked: list[Tracked]) -> None:
    jobs = {t.trial.trial_id: str(t.job.job_id) for t in tracked if t.job is not None}
    data = {
        "grid": sweep.grid,
        "experiment": sweep.experiment,
        "sweep_id": sweep.sweep_id,
        "parent_run_id": parent,
        "tracking_uri": uri,
        "varying": sweep.varying,
        "trials": [
            {"trial_id": t.trial_id, "label": t.label, "job_id": jobs.get(t.trial_id)}
            for t in sweep.trials
        ],
    }
    tmp = sweep.folder / "sweep.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(sweep.folder / "sweep.json")


if __name__ == "__main__":
    sys.exit(main())
