"""The sweep: config composition and validation, dry runs, real runs on the debug and local
executors with a real SQLite MLflow store, resume after SIGKILL, failed trials, lost jobs,
concurrent logging, sync, and the MLflow server reading the runs back over HTTP."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ablations import config as C
from ablations import spec as S
from ablations import tracking
from ablations.record import TrialRecord
from ablations.sweep import main as sweep_main
from tests.helpers import SWEEP_MICRO as MICRO
from tests.helpers import children, cli, free_port, runs, sweep, sweep_in, with_keys

ROOT = Path(__file__).resolve().parent.parent


# --- composition and validation (no runs) ---


def test_the_command_line_wins_over_a_slurm_preset_even_at_the_schema_default():
    base = {"grid": "window_size", "executor": "slurm", "executor.slurm.preset": "local"}
    cfg, _ = C.compose(base)
    assert cfg["executor"]["slurm"]["array_parallelism"] == 2  # the local preset's value
    assert cfg["executor"]["slurm"]["partition"] == "debug"
    default = C.SlurmCfg().array_parallelism
    assert default != 2
    cfg, _ = C.compose({**base, "executor.slurm.array_parallelism": str(default)})
    assert cfg["executor"]["slurm"]["array_parallelism"] == default
    cfg, _ = C.compose({**base, "executor.slurm.partition": "gpu"})
    assert cfg["executor"]["slurm"]["partition"] == "gpu"


def test_grids_expand_to_distinct_trials_as_requested():
    for grid in C.list_grids():
        cfg, spec = C.compose({"grid": grid})
        sweep_ = S.expand(cfg, spec)
        ids = [t.trial_id for t in sweep_.trials]
        assert len(ids) == len(set(ids)) >= 2, grid
        for t in sweep_.trials:
            assert t.config["device"] == "auto", grid  # resolved in the job, not here
            assert t.config["model"]["kernel"] in (None, "math", "sdpa", "flex"), grid


def _plan_ids(**overrides) -> list[str]:
    return [t.trial_id for g in C.list_grids() for t in S.expand(*C.compose({"grid": g})).trials]


def test_planning_is_host_independent_and_builds_nothing(monkeypatch):
    """The same sweep planned on a CPU box and on a GPU node with mamba_ssm gets the same trial
    ids; planning neither asks for the device nor builds the C scan."""
    import torch

    from hrsam.ssm import cpu_scan
    from hrsam.ssm import scan as scan_backends

    cpu_ids = _plan_ids()

    def forbidden(*_, **__):
        raise AssertionError("planning asked a host-dependent question")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(scan_backends, "default_scan", lambda device: "mamba_ssm")
    monkeypatch.setattr(cpu_scan, "build_reason", forbidden)
    monkeypatch.setattr(cpu_scan, "cache_dir", forbidden)
    assert _plan_ids() == cpu_ids


def test_window_size_grid_and_command_line_precedence():
    cfg, spec = C.compose({"grid": "window_size"})
    s = S.expand(cfg, spec)
    assert [t.config["model"]["window_size"] for t in s.trials] == [4, 8, 16]
    assert s.varying == ["model.window_size"]
    # a key fixed on the command line is no longer swept (Hydra's rule) ...
    cfg, spec = C.compose({"grid": "window_size", "model.window_size": "8"})
    assert [t.config["model"]["window_size"] for t in S.expand(cfg, spec).trials] == [8]
    # ... and a,b on the command line is an axis
    cfg, spec = C.compose({"grid": "window_size", "model.window_size": "2,8"})
    assert [t.config["model"]["window_size"] for t in S.expand(cfg, spec).trials] == [2, 8]


def test_trial_ids_are_stable_and_executor_independent():
    a = S.expand(*C.compose({"grid": "window_size"}))
    b = S.expand(*C.compose({"grid": "window_size", "executor": "debug", "out": "elsewhere"}))
    assert [t.trial_id for t in a.trials] == [t.trial_id for t in b.trials]
    c = S.expand(*C.compose({"grid": "window_size", "eval.max_clicks": "10"}))
    assert not {t.trial_id for t in a.trials} & {t.trial_id for t in c.trials}


def test_kernels_share_one_training_per_pattern():
    s = S.expand(*C.compose({"grid": "attention"}))
    keys = {}
    for t in s.trials:
        keys.setdefault(t.config["model"]["attention"], set()).add(t.train_key)
    assert all(len(v) == 1 for v in keys.values())
    assert len({k for v in keys.values() for k in v}) == len(keys)


def test_resolution_grid_trains_once():
    s = S.expand(*C.compose({"grid": "resolution"}))
    assert len({t.train_key for t in s.trials}) == 1
    # on the 1024 px scenes: 0.5x, 1x, 2x of the training ts 512 (the bases' last), all native
    assert [t.config["eval"]["ts"] for t in s.trials] == [256, 512, 1024]
    assert {t.config["train"]["ts"] for t in s.trials} == {512}


def test_paper_profile_evaluates_given_checkpoints(tmp_path):
    for folder in ("DAVIS/img", "DAVIS/gt", "HQ/DIS5K/DIS-VD/im", "HQ/DIS5K/DIS-VD/gt"):
        (tmp_path / folder).mkdir(parents=True)  # the layouts, one pair each (listed, not read)
    for image, mask in (
        ("DAVIS/img/a.jpg", "DAVIS/gt/a.png"),
        ("HQ/DIS5K/DIS-VD/im/a.jpg", "HQ/DIS5K/DIS-VD/gt/a.png"),
    ):
        (tmp_path / image).touch()
        (tmp_path / mask).touch()
    ckpt = tmp_path / "hrsam.pth"
    ckpt.write_bytes(b"x")
    s = S.expand(
        *C.compose(
            {
                "grid": "paper_main",
                "profile": "paper",
                "device": "cpu",
                "data.roots.davis": str(tmp_path / "DAVIS"),
                "data.roots.hqseg44k": str(tmp_path / "HQ"),
                "checkpoints.hrsam_vit_b": str(ckpt),
            }
        )
    )
    assert len(s.trials) == 3 * 2 * 3
    assert all(t.train_key is None for t in s.trials)
    # the embedded default's `set:` (window 4 for the tiny models) stays out: the official
    # checkpoints run at their own window
    assert {t.config["model"]["window_size"] for t in s.trials} == {None}
    hrsam = [t for t in s.trials if t.config["model"]["preset"] == "hrsam_vit_b"]
    assert {t.config["model"]["checkpoint"] for t in hrsam} == {str(ckpt)}
    assert {t.config["data"]["root"] for t in s.trials} == {
        str(tmp_path / "DAVIS"),
        str(tmp_path / "HQ"),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grid=windowsize"], "unknown grid 'windowsize'; grids: attention, paper_main"),
        ([], "grid=<name> is required"),
        (["grid=window_size", "model.window_sz=8"], "did you mean 'model.window_size'?"),
        (["grid=window_size", "model.window_size=0"], "window_size=0 must be >= 1"),
        (["grid=window_size", "model.detail=-1"], "detail=-1 must be >= 0"),
        (["grid=window_size", "eval.ts=500"], "eval.ts=500 must be a positive multiple of 16"),
        (["grid=window_size", "eval.ts=abc"], "eval.ts"),
        (["grid=window_size", "train.base_ts=100"], "train.base_ts=100 must be 0 (the finetune"),
        (["grid=attention", "model.kernel=fast"], "unknown kernel 'fast'; valid: flash, flex"),
        (["grid=window_size", "data.name=davis", "data.root=/nope"], "'/nope' (davis)"),
        (["grid=window_size", "executor=pbs"], "unknown executor 'pbs'"),
        (["grid=window_size", "profile=huge"], "unknown profile 'huge'"),
        (["grid=window_size", "--dryrun"], "did you mean '--dry-run'?"),
        (["grid=window_size", "mlflow.tracking_uri=./mlruns"], "sqlite:///<path>"),
        # impossible scene specs of the synthetic generator (issue #30)
        (["grid=window_size", "data.objects=0"], "data.objects=0 must be N or MIN-MAX"),
        (["grid=window_size", "data.size=32"], "data.size=32 must be >= 64 px"),
        (["grid=window_size", "data.stroke=8", "data.size=128"], "below the largest structure"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    r = cli(sweep_main, *args, cwd=tmp_path)  # in-process: test_bad_input.py runs one in a shell
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    cache = tmp_path.parent / f"{tmp_path.name}-hrsam-cache"  # where the C scan would be built
    monkeypatch.setenv("HRSAM_CACHE", str(cache))
    r = cli(sweep_main, "grid=window_size", "--dry-run", cwd=tmp_path)
    assert r.code == 0, r.err
    assert not cache.exists(), "the dry run built the C scan"
    s = S.expand(*C.compose({"grid": "window_size"}))
    for t in s.trials:
        assert t.trial_id in r.out
    assert "| model.window_size |" in r.out and "pending" in r.out
    assert list(tmp_path.iterdir()) == []


def test_help_lists_grids_and_keys(tmp_path):
    r = cli(sweep_main, "--help", cwd=tmp_path)
    assert r.code == 0
    assert "grids: attention, paper_main, resolution, scale, scan, window_size" in r.out
    assert "model.window_size" in r.out and "executor.slurm.partition" in r.out


# --- real runs ---


@pytest.mark.slow
def test_debug_sweep_end_to_end_then_rerun_starts_nothing(tmp_path):
    r = sweep_in(tmp_path, "grid=window_size", "executor=debug", *MICRO)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = tmp_path / "outputs" / "sweeps" / "window_size"
    trials = sorted(p for p in (folder / "trials").iterdir() if not p.name.startswith("."))
    assert len(trials) == 3
    for t in trials:
        names = {p.name for p in t.iterdir()}
        assert {"config_resolved.yaml", "result.json", "ious.csv", "clicks.csv", "log.txt"} <= names
        record = json.loads((t / "result.json").read_text())
        assert record["status"] == "FINISHED"
        m = record["metrics"]
        assert 1 <= m["noc90"] <= 3 and 0 <= m["miou_at_1"] <= 1 and m["encoder_ms"] > 0
        assert m["gflops"] > 0 and m["params"] > 0 and m["peak_mem_mb"] > 0
    # nothing left behind: no trial locks, no empty job folders
    assert not list((folder / "trials").glob(".*.lock"))
    assert not [d for d in folder.rglob("*") if d.is_dir() and not any(d.iterdir())]
    df = runs(tmp_path, "window_size")
    assert (df["tags.hrsam.role"] == "sweep").sum() == 1
    kids = children(df)
    assert len(kids) == 3 and set(kids["status"]) == {"FINISHED"}
    parent = df[df["tags.hrsam.role"] == "sweep"].iloc[0]
    assert set(kids["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    assert parent["status"] == "FINISHED"
    assert sorted(kids["params.model.window_size"].astype(int)) == [4, 8, 16]
    for col in ("noc90", "miou_at_1", "encoder_ms", "decoder_ms", "sat_s", "peak_mem_mb"):
        assert kids[f"metrics.{col}"].notna().all(), col
    assert kids["tags.git_sha"].str.len().min() == 40
    # miou as a step series over clicks
    from mlflow.tracking import MlflowClient

    hist = MlflowClient().get_metric_history(kids.iloc[0]["run_id"], "miou")
    assert [h.step for h in hist] == [1, 2, 3]
    # the same sweep again starts no trial and adds no run
    r2 = sweep_in(tmp_path, "grid=window_size", "executor=debug", *MICRO)
    assert r2.returncode == 0, r2.stderr
    assert "3 trial(s) already finished" in r2.stdout
    assert "[sweep] 0/0 done" not in r2.stderr
    df2 = runs(tmp_path, "window_size")
    assert len(df2) == len(df)
    # sync re-imports trial folders that MLflow lacks (here: a fresh database)
    (tmp_path / "mlflow.db").unlink()
    s = subprocess.run(
        [sys.executable, "-m", "ablations.sync", "experiment=window_size"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert s.returncode == 0, s.stderr
    assert len(children(runs(tmp_path, "window_size"))) == 3


@pytest.mark.slow
def test_unsupported_and_failed_trials_reach_mlflow_and_the_report_as_themselves(tmp_path):
    """Through the real jobs, MLflow and reports.build: a kernel this CPU cannot run is
    ``unsupported: <reason>`` (decided in the job from the kernel's own support(), before any
    training; the sweep still exits 0 for it), a trial that raises is failed (exit 1), the rest
    complete."""
    r = sweep(
        tmp_path,
        "grid=attention",
        "executor=debug",
        "model.attention=window",
        "model.kernel=sdpa,xformers",
        "train.lr=0.0003,1e30",  # a recipe that diverges: the training raises in the job
        *with_keys(MICRO, "report=true"),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 of 4 trials finished, 2 unsupported on this device (not a failure), 1 failed" in (
        r.stderr
    )
    assert "UNSUPPORTED" in r.stdout and "xformers runs on CUDA only" in r.stdout
    kids = children(runs(tmp_path, "attention"))
    state = {
        (k, float(lr)): (s, t)
        for k, lr, s, t in zip(
            kids["params.model.kernel"],
            kids["params.train.lr"],
            kids["status"],
            kids["tags.hrsam.status"],
            strict=True,
        )
    }
    assert state == {
        ("sdpa", 3e-4): ("FINISHED", "FINISHED"),
        ("xformers", 3e-4): ("FINISHED", "UNSUPPORTED"),
        ("sdpa", 1e30): ("FAILED", "FAILED"),
        ("xformers", 1e30): ("FINISHED", "UNSUPPORTED"),  # decided before the training
    }
    failed = kids[kids["tags.hrsam.status"] == "FAILED"].iloc[0]
    assert "FloatingPointError: loss is" in failed["tags.hrsam.error"]
    from mlflow.tracking import MlflowClient

    path = MlflowClient().download_artifacts(failed["run_id"], "traceback.txt", str(tmp_path))
    assert "Traceback" in Path(path).read_text()
    record = json.loads(
        next((tmp_path / "outputs/sweeps/attention/trials").glob("*/result.json")).read_text()
    )
    assert set(record) >= {"status", "params", "resolved", "metrics", "provenance", "reason"}
    table = (tmp_path / "reports/out/attention/tables/ablation_attention.md").read_text()
    assert table.splitlines()[2].startswith("| kernel | lr | 5-1 gain (%) | neg Δ (%)")
    rows = table.splitlines()[4:8]
    by = {tuple(c.strip() for c in row.split("|")[1:3]): row for row in rows}
    lrs = sorted({lr for _, lr in by}, key=float)
    reason = "unsupported: attention window with kernel xformers cannot run on cpu"
    assert (
        f"| {reason} |" in by[("xformers", lrs[0])] and f"| {reason} |" in by[("xformers", lrs[1])]
    )
    assert f"*{reason}: xformers runs on CUDA only" in table  # the whole reason, as a note
    assert "| failed |" in by[("sdpa", lrs[1])]
    assert "unsupported" not in by[("sdpa", lrs[0])] and "failed" not in by[("sdpa", lrs[0])]


def _trial_dirs(folder: Path) -> list[Path]:
    d = folder / "trials"
    return [p for p in d.iterdir() if not p.name.startswith(".")] if d.exists() else []


@pytest.mark.slow
def test_sigkill_midway_then_rerun_finishes_without_duplicates(tmp_path):
    args = ["grid=window_size", "executor=local", *MICRO]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HRSAM_FLEX_COMPILE": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablations.sweep", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = tmp_path / "outputs" / "sweeps" / "window_size"
    deadline = time.monotonic() + 300
    while not _trial_dirs(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _trial_dirs(folder), "no trial finished in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_trial_dirs(folder)) < 3
    r = sweep(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    kids = children(runs(tmp_path, "window_size"))
    assert len(kids) == 3 and kids["tags.hrsam.trial_id"].is_unique
    assert set(kids["status"]) == {"FINISHED"}
    assert len(_trial_dirs(folder)) == 3


def _pids_running(pattern: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if pattern in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.slow
def test_job_killed_outside_python_is_reported_failed(tmp_path):
    # a long training so the job is still running when it is killed
    args = ["grid=window_size", "executor=local", "model.window_size=8"]
    args += with_keys(MICRO, "train.steps=5000")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HRSAM_FLEX_COMPILE": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablations.sweep", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = tmp_path / "outputs" / "sweeps" / "window_size" / "trials"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(folder.glob(".*.progress")):
        time.sleep(0.2)
    workers = [p for p in _pids_running("submitit.core._submit") if str(tmp_path) in _cwd(p)]
    assert workers, "the trial's job process was not found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == 1, out + err
    assert "ended without a result" in err
    kids = children(runs(tmp_path, "window_size"))
    assert list(kids["status"]) == ["FAILED"]


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _log_one(args) -> str:
    uri, parent, i = args
    record = TrialRecord(f"t{i}", "s", "g", "concurrent", f"i={i}", "FINISHED")
    record.params = {f"p{k}": k * i for k in range(150)}  # > 100: several batches
    record.metrics = {"noc90": float(i), "miou_at_1": 0.5}
    record.miou_curve = [0.1 * k for k in range(1, 21)]
    record.provenance = {"host": "h"}
    return tracking.log_trial(uri, "concurrent", parent, record, None)


@pytest.mark.slow
def test_eight_trials_logging_at_once_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_sweep(uri, "concurrent", "s", "g", {"a": 1}, ["i"], tmp_path / "art")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        ids = pool.map(_log_one, [(uri, parent, i) for i in range(8)])
    assert len(set(ids)) == 8
    import mlflow

    mlflow.set_tracking_uri(uri)
    df = children(mlflow.search_runs(experiment_names=["concurrent"]))
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"}
    assert sorted(df["metrics.noc90"]) == [float(i) for i in range(8)]
    assert (df["params.p149"].astype(int) == 149 * df["metrics.noc90"].astype(int)).all()
    from mlflow.tracking import MlflowClient

    for run_id in df["run_id"]:
        assert len(MlflowClient().get_metric_history(run_id, "miou")) == 20
    # logging the same trial again reuses its run
    again = _log_one((uri, parent, 3))
    assert again in ids
    assert len(children(mlflow.search_runs(experiment_names=["concurrent"]))) == 8


@pytest.mark.external
@pytest.mark.slow
def test_mlflow_server_serves_the_runs_on_loopback(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_sweep(uri, "served", "s", "g", {"a": 1}, ["i"], tmp_path / "art")
    for i in range(2):
        rec = TrialRecord(f"t{i}", "s", "g", "served", f"i={i}", "FINISHED")
        rec.params, rec.metrics = {"i": i}, {"noc90": float(i)}
        tracking.log_trial(uri, "served", parent, rec, None)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=served"
        with urllib.request.urlopen(url, timeout=10) as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [exp_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            found = json.load(r)["runs"]
        roles = sorted(
            t["value"] for run in found for t in run["data"]["tags"] if t["key"] == "hrsam.role"
        )
        assert roles == ["sweep", "trial", "trial"]
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_paper_main_trains_once_per_model_at_one_ts_and_evaluates_at_1x_2x():
    """The grid's ``set`` fixes the training ts (not an axis: no column for it); a key given on
    the command line still wins."""
    sweep = S.expand(*C.compose({"grid": "paper_main"}))
    ts = {t.config["train"]["ts"] for t in sweep.trials}
    assert ts == {512} and "train.ts" not in sweep.varying
    assert sorted({t.config["eval"]["ts"] for t in sweep.trials}) == [512, 1024]
    presets = {t.config["model"]["preset"] for t in sweep.trials}
    assert presets == {"sam_tiny", "hrsam_tiny", "hrsampp_tiny"}
    assert len({t.train_key for t in sweep.trials}) == 3  # one training per model
    # the presets' own window, 8 of the 32 x 32 tokens at ts 512: the paper's 16 of 64 at 1024
    from hrsam.models import get_preset

    assert {t.config["model"]["window_size"] for t in sweep.trials} == {None}
    assert {get_preset(p).window_size for p in presets} == {8}
    # every model finetunes from its pretrained base, whose last stage trained at that ts
    from hrsam import pretrained

    assert all(t.base.pretrained for t in sweep.trials)
    bases = {
        pretrained.final_ts(pretrained.manifest(t.config["model"]["preset"])) for t in sweep.trials
    }
    assert bases == {512}
    cli = S.expand(*C.compose({"grid": "paper_main", "train.ts": "128"}))
    assert {t.config["train"]["ts"] for t in cli.trials} == {128}


def test_no_default_grid_evaluates_the_embedded_default_above_its_native_size():
    """Issue #30: the embedded default's scenes are drawn at ``data.size``; every grid's
    training and evaluation ts stays at or below it, so no default result is an upsampled
    picture. An evaluation above it is marked (tests/test_evaluate.py)."""
    for grid in C.list_grids():
        sweep = S.expand(*C.compose({"grid": grid}))
        for t in sweep.trials:
            d, ts = t.config["data"], t.config["eval"]["ts"]
            if d["name"] != "synthetic":
                continue
            assert d["version"] >= 3, grid
            assert ts <= d["size"], (grid, ts, d["size"])
            assert t.config["train"]["ts"] <= d["size"], grid


def test_results_md_marks_shared_core_timings_like_the_report(tmp_path):
    from ablations import record as R
    from ablations.sweep import results_table

    cfg, grid = C.compose(C.parse_args(["grid=window_size", f"out={tmp_path}"])[0])
    planned = S.expand(cfg, grid)
    records = {}
    for i, t in enumerate(planned.trials):
        r = TrialRecord(t.trial_id, "s", "window_size", "window_size", t.label)
        r.metrics = {"noc90": 5.0, "encoder_ms": 10.0 + i, "peak_mem_mb": 6.0}
        r.provenance = {"timing_shared": str(i == 1)}
        records[t.trial_id] = r
    table = results_table(planned, records)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert "11.0‡" in rows[1] and "6.000‡" in rows[1] and "‡" not in rows[0] + rows[2]
    assert "| 5.000 " in rows[1]  # quality is not a timing: never marked
    assert table.splitlines()[-1] == f"{R.SHARED_MARK} {R.SHARED_NOTE}"
    assert "[95% CI]: over the objects of the row's one training seed" in table
    records[planned.trials[1].trial_id].provenance = {"timing_shared": "False"}
    assert R.SHARED_MARK not in results_table(planned, records)


@pytest.mark.slow
def test_replicated_sweep_groups_seeds_and_its_intervals_cover_them(tmp_path):
    """repeats=2: every point runs once per seed (distinct trial ids, resumed per replicate), one
    parent run holds them, and the results and report intervals cover both seeds, ending with
    the sentences written from them."""
    args = ["grid=window_size", "model.window_size=4,8", "repeats=2", "executor=debug"]
    micro = with_keys(MICRO, "report=true", "data.n_val=3")
    r = sweep_in(tmp_path, *args, *micro)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = tmp_path / "outputs" / "sweeps" / "window_size"
    records = [json.loads(p.read_text()) for p in folder.glob("trials/*/result.json")]
    points = sorted((c["params"]["model.window_size"], c["params"]["seed"]) for c in records)
    assert points == [(4, 42), (4, 43), (8, 42), (8, 43)]
    assert len({c["trial_id"] for c in records}) == 4
    df = runs(tmp_path, "window_size")
    kids = children(df)
    assert len(kids) == 4 and kids["tags.mlflow.parentRunId"].nunique() == 1
    assert sorted(kids["params.seed"].astype(int)) == [42, 42, 43, 43]
    results = (folder / "results.md").read_text()
    tail = results.split("## What the intervals show", 1)[1]
    assert "window_size=8 vs window_size=4 (over 2 seeds and the objects): " in tail
    report = (tmp_path / "reports/out/window_size/report.md").read_text()
    assert "95% interval over 2 training seeds and" in report
    assert report.rstrip().endswith(tail.strip().splitlines()[-1])
    # one replicate lost: the re-run trains that one alone
    lost = next(p for p in folder.glob("trials/*") if json.loads(
        (p / "result.json").read_text())["params"]["seed"] == 43)  # fmt: skip
    shutil.rmtree(lost)
    r2 = sweep_in(tmp_path, *args, *micro)
    assert r2.returncode == 0, r2.stderr
    assert "3 trial(s) already finished" in r2.stdout
    assert json.loads((lost / "result.json").read_text())["status"] == "FINISHED"
    assert len(children(runs(tmp_path, "window_size"))) == 4  # its run reused, no duplicate


@pytest.mark.slow
def test_evaluating_an_hrsam_train_checkpoint_takes_its_settings_from_the_checkpoint(tmp_path):
    """Evaluating a checkpoint of `python -m hrsam.train` (window 8) with grid=resolution at
    growing ts needs no key beyond the checkpoint, and a user's conflicting key
    is one line naming where it came from and what the checkpoint holds."""
    from hrsam.train.__main__ import main as train_main

    data = [f"data.root={tmp_path}/data", "data.size=64", "data.n_train=2", "data.n_val=2"]
    out = tmp_path / "ckpt"
    args = ["recipe=tiny-synthetic", "steps=2", "ts=64", *data, f"out={out}"]
    assert train_main(args) == 0
    ckpt = out / "last.pt"
    micro = [k for k in MICRO if not k.startswith(("train.", "eval.ts", "data."))]
    common = ["grid=resolution", "train.enabled=false", f"model.checkpoint={ckpt}", *data]
    r = sweep_in(tmp_path, *common, "executor=debug", *micro)
    assert r.returncode == 0, r.stdout + r.stderr
    records = [
        json.loads(p.read_text()) for p in tmp_path.glob("outputs/sweeps/*/trials/*/result.json")
    ]
    assert sorted(r["params"]["eval.ts"] for r in records) == [256, 512, 1024]
    assert {r["resolved"]["model.window_size"] for r in records} == {8}
    bad = sweep_in(tmp_path, *common, "model.window_size=4", "--dry-run")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"error: model.window_size=4 (command line) differs from the checkpoint's window_size=8:"
        f" {ckpt} was trained with it; drop the key to evaluate the checkpoint as it is"
    )
