"""The app on a real finished micro sweep (executor=debug, a real SQLite MLflow store, no stand-in):
started on the sweep's folder it offers the validation images each trial was evaluated on, by
their sample names, and writes nothing to its working directory; a trial listed from MLflow loads
and answers clicks as an offline replay does; the trial's run carries the command that opens it
(``hrsam.try``); a bad store, experiment or trial is one line and exit 2."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrsam import names
from hrsam.app.__main__ import build, main, parse_args
from hrsam.app.models import load
from hrsam.app.server import replay
from hrsam.data import DataConfig
from hrsam.interactive.metrics import iou
from hrsam.models import Predictor
from tests.helpers import free_port, serve

pytestmark = pytest.mark.slow
EXPERIMENT = "window_size"


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One finished micro trial (window 4): its folder, record, ious.csv names and store URI."""
    from tests.helpers import SWEEP_MICRO as MICRO
    from tests.helpers import sweep_in

    root = tmp_path_factory.mktemp("sweep")
    r = sweep_in(root, f"grid={EXPERIMENT}", "executor=debug", "model.window_size=4", *MICRO)
    assert r.returncode == 0, r.stdout + r.stderr
    (trial,) = (root / "outputs/sweeps" / EXPERIMENT / "trials").glob("*/result.json")
    with open(trial.parent / "ious.csv") as f:
        objects = [row["name"] for row in csv.DictReader(f)]
    return {
        "root": root,
        "sweeps": root / "outputs/sweeps",
        "record": json.loads(trial.read_text()),
        "objects": objects,
        "uri": f"sqlite:///{root / 'mlflow.db'}",
        "data": DataConfig(root=str(root / "data/synthetic"), size=64, n_train=2, n_val=2),
    }


def _get(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_on_a_sweeps_folder_the_app_offers_the_trials_own_images_and_writes_nothing(done, tmp_path):
    cwd = tmp_path / "elsewhere"  # not where the sweep ran
    cwd.mkdir()
    data_before = _tree(done["root"] / "data")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "hrsam.app", "--sweeps", str(done["sweeps"]), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the app did not answer"
            try:
                status, data = _get(base + "/api/images")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200
        images = json.loads(data)
        status, data = _get(base + "/api/models")
        models = json.loads(data)
        # the objects the trial was evaluated on, by the names its ious.csv gives them
        assert [i["name"] for i in images] == done["objects"]
        assert [m["id"] for m in models] == [done["record"]["trial_id"]]
        assert models[0]["dataset"] == images[0]["dataset"] == "synthetic v3_64px_2+2_s0"
        ds = done["data"].build("val")
        for shown, sample in zip(images, (ds[i] for i in range(len(ds))), strict=True):
            assert shown["name"] == sample.name
            status, pixels = _get(f"{base}/api/images/{shown['id']}")
            assert np.array_equal(_png(pixels), sample.image)  # the sweep's own files
            status, gt = _get(f"{base}/api/images/{shown['id']}/gt")
            assert np.array_equal(_png(gt) > 127, sample.gt)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert list(cwd.iterdir()) == []  # nothing generated, nothing written here
    assert _tree(done["root"] / "data") == data_before  # nor a second copy beside the sweep's


def test_a_trial_listed_from_mlflow_answers_a_click_as_an_offline_replay(
    done, tmp_path, monkeypatch
):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    trial = done["record"]["trial_id"]
    args = parse_args(["--mlflow", done["uri"], "--experiment", EXPERIMENT])
    engine, app = build(args, tmp_path / "app")
    assert list(engine.models) == [trial]
    entry = engine.models[trial]
    assert entry.checkpoint == done["record"]["provenance"]["weights"] and entry.ts == 64
    base, server, thread = serve(app)
    try:
        status, data = _get(base + "/api/images")
        first = json.loads(data)[0]
        sample = done["data"].build("val")[0]
        assert first["name"] == sample.name == done["objects"][0]
        ys, xs = np.nonzero(sample.gt)
        clicks = [(int(ys[len(ys) // 2]), int(xs[len(xs) // 2]), True), (0, 0, False)]
        body = {"model": trial, "image": first["id"],
                "clicks": [{"y": y, "x": x, "positive": p} for y, x, p in clicks]}  # fmt: skip
        status, data = _get(base + "/api/predict", body)
        assert status == 200, data
        shown = json.loads(data)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    predictor = Predictor(load(entry), 64)  # offline: the trial's weights at its eval ts
    predictor.set_image(sample.image)
    logits, _ = replay(predictor, clicks)
    offline = logits[0].float().numpy() > 0
    assert np.array_equal(_png(base64.b64decode(shown["mask"])) > 127, offline)
    assert abs(shown["iou"] - iou(offline, sample.gt)) < 1e-6
    assert list(cwd.iterdir()) == []


def test_the_trials_run_carries_the_command_that_opens_it(done, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    trial = done["record"]["trial_id"]
    client = MlflowClient(done["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], f"tags.`{names.TRIAL_ID}` = '{trial}'")
    assert len(runs) == 1
    argv = shlex.split(runs[0].data.tags[names.TRY])
    assert argv[:3] == ["python", "-m", "hrsam.app"]
    args = parse_args(argv[3:])
    assert (args.mlflow, args.experiment, args.trial) == (done["uri"], EXPERIMENT, trial)
    engine, _ = build(args, tmp_path / "app")
    assert next(iter(engine.models)) == trial  # preselected: the page opens on it


def test_a_bad_store_experiment_or_trial_is_one_line_and_exit_2(
    done, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    uri = done["uri"]
    cases = {
        "no store": (
            ["--mlflow", "sqlite:///missing.db"],
            "error: MLflow store sqlite:///missing.db does not exist",
        ),
        "unknown experiment": (
            ["--mlflow", uri, "--experiment", "x"],
            f"error: experiment 'x' not found in {uri}; experiments: Default, {EXPERIMENT}",
        ),
        "unknown trial": (
            ["--mlflow", uri, "--experiment", EXPERIMENT, "--trial", "nope"],
            f"error: trial 'nope' not found in {uri} (experiment {EXPERIMENT}); "
            f"trials: {done['record']['trial_id']}",
        ),
        "unknown trial of a folder": (
            ["--sweeps", str(done["sweeps"]), "--trial", "nope"],
            f"error: trial 'nope' not found in {done['sweeps']}; trials: ",
        ),
        "an experiment without a store": (
            ["--experiment", EXPERIMENT],
            f"error: --experiment {EXPERIMENT} needs --mlflow",
        ),
    }
    for name, (argv, line) in cases.items():
        assert main([*argv, "--port", str(free_port())]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(line) and "\n" not in err, (name, err)
    assert list(tmp_path.iterdir()) == []  # no empty store made, nothing written


def test_the_app_imports_mlflow_only_when_asked():
    code = (
        "import sys, hrsam.app.__main__, hrsam.app.models, hrsam.app.server, "
        "hrsam.app.mlflow_trials; assert 'mlflow' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
