"""Numbers a researcher can trust: the same trial gives the same weights and metrics, timings say
what they ran on and whether another trial shared the CPU, runs are visible in MLflow while
they run, and bad checkpoints are refused before anything is submitted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ablations import sweep
from hrsam import names
from tests.helpers import DEBUG_MICRO as MICRO
from tests.helpers import SWEEP_MICRO, records, sweep_in, with_keys
from tests.helpers import sweep as run_sweep


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_same_trial_in_two_experiments_gives_identical_weights_and_metrics(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        assert (
            sweep.main(["grid=window_size", "model.window_size=4", f"experiment={name}", *MICRO])
            == 0
        )
    (a,), (b,) = records(tmp_path, "a"), records(tmp_path, "b")
    assert a.trial_id == b.trial_id and a.params["seed"] == 42
    ckpts = [
        next((tmp_path / "outputs/sweeps" / name / "cache/train").glob("*/model.pt"))
        for name in ("a", "b")
    ]
    assert _sha(ckpts[0]) == _sha(ckpts[1])
    timings = set(names.BENCH_METRICS) | set(names.EVAL_TIMINGS) | {"train_s"}
    quality = {k: v for k, v in a.metrics.items() if k not in timings}
    assert quality == {k: v for k, v in b.metrics.items() if k not in timings}
    assert {"train_loss", "noc90", names.miou_at(1)} <= set(quality)
    assert a.miou_curve == b.miou_curve


def test_a_corrupt_checkpoint_is_refused_before_submission(tmp_path):

    bad = tmp_path / "hrsam.pth"
    bad.write_bytes(b"not a checkpoint at all")
    r = sweep_in(tmp_path, "grid=window_size", "train.enabled=false", f"model.checkpoint={bad}")
    assert r.returncode == 2, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"error: model.checkpoint='{bad}'")
    assert line.endswith(
        "is corrupt or not a PyTorch checkpoint (truncated, or not written by torch.save)"
    )
    assert "weights_only" not in line  # torch's advice to load it unsafely is not ours
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hrsam.pth"]  # nothing else written


@pytest.mark.slow
def test_parallel_local_timing_trials_say_they_shared_the_cpu(tmp_path):
    """Two timing trials at once on the local executor: their timings either did not overlap
    or both records say they were taken on a shared CPU; each records its threads."""

    args = ["grid=window_size", "model.window_size=4,8", "executor=local", "executor.parallel=2"]
    r = run_sweep(
        tmp_path, *args, "executor.cpus_per_task=1", *with_keys(SWEEP_MICRO, "train.steps=30")
    )
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = records(tmp_path, "window_size")
    for rec in (a, b):
        assert rec.provenance["threads"] == "1" and int(rec.provenance["cores"]) >= 1
    for me, other in ((a, b), (b, a)):  # my timing window against the other's whole run
        t0, t1 = float(me.provenance["timing_start"]), float(me.provenance["timing_end"])
        overlap = float(other.provenance["start"]) < t1 and float(other.provenance["end"]) > t0
        expected = ("True", other.trial_id) if overlap else ("False", "")
        assert (me.provenance["timing_shared"], me.provenance["shared_with"]) == expected
    assert not list((tmp_path / "outputs/sweeps/window_size/trials").glob(".*.running"))


@pytest.mark.slow
def test_runs_are_live_in_mlflow_and_the_parent_holds_the_report(tmp_path):
    """While a sweep trains, its child run is RUNNING with a partial loss curve (polled from
    this process while the sweep runs in another); at the end it is FINISHED with the whole
    curve, the parent run holds the report and the command line, and the experiment is tagged
    as model training (MLflow's UI then opens on the runs table)."""
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    steps = 150
    args = ["grid=window_size", "model.window_size=4", "executor=local"]
    args += with_keys(SWEEP_MICRO, f"train.steps={steps}", "report=true")
    env = {"PYTHONUNBUFFERED": "1", "HRSAM_FLEX_COMPILE": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablations.sweep", *args],
        cwd=tmp_path,
        env={**__import__("os").environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = []  # (status, points in the loss curve) while the sweep ran
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        # a second process migrating a new SQLite store races the sweep's own first migration:
        # ask MLflow only once a trial runs (the sweep made the store before any job)
        if not list((tmp_path / "outputs/sweeps/window_size/trials").glob(".*.running")):
            continue
        try:
            c = MlflowClient(uri)
            exp = c.get_experiment_by_name("window_size")
            kids = exp and c.search_runs([exp.experiment_id], "tags.`hrsam.role` = 'trial'")
            if kids:
                run = kids[0]
                curve = c.get_metric_history(run.info.run_id, "train_loss")
                seen.append((run.info.status, run.data.tags.get(names.STATUS), len(curve)))
        except Exception:  # the database is being written by the sweep: try again
            continue
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    partial = [s for s in seen if s[0] == "RUNNING" and s[1] == "RUNNING" and 0 < s[2] < steps]
    assert partial, f"never saw a RUNNING run with a partial curve: {seen[-5:]}"
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("window_size")
    assert exp.tags[names.EXPERIMENT_KIND[0]] == names.EXPERIMENT_KIND[1]
    [kid] = c.search_runs([exp.experiment_id], "tags.`hrsam.role` = 'trial'")
    assert kid.info.status == "FINISHED" and kid.data.tags[names.STATUS] == "FINISHED"
    curve = c.get_metric_history(kid.info.run_id, "train_loss")
    assert sorted(m.step for m in curve if m.step > 0) == list(range(1, steps + 1))
    assert len(c.get_metric_history(kid.info.run_id, "lr")) == steps
    [parent] = c.search_runs([exp.experiment_id], "tags.`hrsam.role` = 'sweep'")
    assert parent.data.tags[names.NOTE].startswith("python -m ablations.sweep grid=window_size")
    report = {a.path for a in c.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/tables"} <= report


def _dom(page, url: str, *groups: list[str]) -> str:
    """The page's HTML once, of each group of snippets, one is in it (React renders the runs
    table after the page loads; its separators between text pieces are left out)."""
    page.goto(url)
    # the HTML that satisfied the wait, not a later read: MLflow routes by the URL's hash, so a
    # goto to another of its pages re-renders in place and a second read can catch it mid-way
    html = page.wait_for_function(
        "groups => { const html = document.documentElement.outerHTML.replaceAll('<!-- -->', '');"
        " return groups.every(g => g.some(s => html.includes(s))) && html; }",
        arg=[list(g) for g in groups],
        polling=250,
    )
    return html.json_value()


def _shown(value: float) -> set[str]:
    """The ways the runs table may print a metric's value."""
    return {f"{value:g}", f"{value:.4g}", f"{value:.3f}", f"{value:.2f}", str(value)}


@pytest.mark.external
@pytest.mark.slow
# the runs table renders the columns in view only
@pytest.mark.browser_context_args(viewport={"width": 2400, "height": 1200})
def test_the_mlflow_ui_opens_a_sweep_on_its_runs_table_in_headless_chromium(tmp_path, page):
    """The page the sweep prints opens MLflow's runs table (not the GenAI overview of traces)
    with the sweep's run, and each trial's page shows its name, params and metrics."""
    import re
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow

    r = sweep_in(
        tmp_path,
        "grid=window_size",
        "executor=debug",
        "train.enabled=false",
        *with_keys(SWEEP_MICRO, "eval.max_clicks=5"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    [link] = re.findall(r"http://127\.0\.0\.1:5000/(\S+)", r.stdout)
    assert "/runs?workflowType=machine_learning&viewStateShareKey=hrsam-" in link
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and ui.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        mlflow.set_tracking_uri(uri)
        kids = mlflow.search_runs(experiment_names=["window_size"])
        kids = kids[kids["tags.hrsam.role"] == "trial"]
        assert len(kids) == 3
        labels = list(kids["tags.hrsam.label"])
        metrics = ("metrics.noc90", "metrics.miou_at_5")
        values = [[f">{v}<" for v in _shown(kid[m])] for _, kid in kids.iterrows() for m in metrics]
        dom = _dom(
            page, f"{base}/{link}", ["matching runs"], *([f">{x}<"] for x in labels), *values
        )
        assert "Detect Issues" not in dom  # the GenAI overview's
        assert "<strong>3</strong> matching runs" in dom, dom[-3000:]  # the trials, unfolded
        for label in labels:
            assert f">{label}<" in dom, label
        # the compared metrics are columns of the table: every trial's NoC90 and mIoU@5 shown
        (tmp_path / "mlflow_runs.html").write_text(dom)
        for _, kid in kids.iterrows():
            for name in metrics:
                assert any(f">{v}<" in dom for v in _shown(kid[name])), (name, kid[name])
        assert "noc90" in dom and "miou_at_5" in dom  # the column headers
        kid = kids.iloc[0]
        run_page = link.split("&")[0].replace("/runs?", f"/runs/{kid['run_id']}?")
        on_page = ["Run ID", kid["run_id"], kid["tags.hrsam.label"], "model.window_size", "noc90"]
        dom = _dom(page, f"{base}/{run_page}", *([x] for x in on_page))
        assert "matching runs" not in dom  # the trial's own page, not the table it came from
        assert kid["tags.hrsam.label"] in dom and "model.window_size" in dom and "noc90" in dom
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
