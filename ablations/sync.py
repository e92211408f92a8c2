"""Re-import trial folders into MLflow: ``python -m ablations.sync experiment=<name> [key=value]``

    python -m ablations.sync experiment=window_size
    python -m ablations.sync experiment=window_size mlflow.tracking_uri=http://login1:5000

The trial folders (``<out>/<experiment>/trials/<id>/result.json``) are the record; this logs every
trial that MLflow lacks, or holds with another status, under the sweep's parent run (re-created
from ``sweep.json`` when the store is new). Useful after a job could not reach the tracking
server, or to move a sweep to another store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ablations import tracking
from ablations.record import TrialRecord
from hrsam import cli
from hrsam.cli import UsageError

KEYS = {
    "experiment": (str, "the sweep's experiment (its folder under out)"),
    "out": (str, "sweeps folder"),
    "mlflow.tracking_uri": (str, "MLflow store"),
}
DEFAULTS = {"out": "outputs/sweeps", "mlflow.tracking_uri": "sqlite:///mlflow.db"}


def sync(folder: Path, uri: str) -> tuple[int, int]:
    """Returns (trials logged now, trials already in MLflow)."""
    info = json.loads((folder / "sweep.json").read_text())
    experiment, sweep_id = info["experiment"], info["sweep_id"]
    parent = tracking.start_sweep(
        uri,
        experiment,
        sweep_id,
        info["grid"],
        {"grid": info["grid"]},
        info["varying"],
        folder / "mlartifacts",
    )
    logged = tracking.trial_runs(uri, experiment, sweep_id)
    added = present = 0
    ok = True
    for trial in info["trials"]:
        record = TrialRecord.load(folder / "trials" / trial["trial_id"])
        if record is None:
            ok = False
            continue
        ok = ok and not record.failed
        if logged.get(record.trial_id, ("", ""))[1] == record.status:
            present += 1
            continue
        tracking.log_trial(uri, experiment, parent, record, folder / "trials" / record.trial_id)
        added += 1
    tracking.end_sweep(uri, parent, ok)
    if info.get("parent_run_id") != parent:
        info["parent_run_id"] = parent
        tmp = folder / "sweep.json.tmp"
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(folder / "sweep.json")
    return added, present


def _main(cfg: dict) -> int:
    if "experiment" not in cfg:
        raise UsageError("experiment=<name> is required")
    out = Path(cfg["out"])
    folder = out / cfg["experiment"]
    if not (folder / "sweep.json").is_file():
        known = sorted(p.parent.name for p in out.glob("*/sweep.json"))
        raise UsageError(
            f"no sweep {cfg['experiment']!r} under {out}; sweeps: {', '.join(known) or 'none'}"
        )
    added, present = sync(folder, tracking.absolute_uri(cfg["mlflow.tracking_uri"]))
    print(f"{cfg['experiment']}: {added} trial(s) logged, {present} already in MLflow")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, __doc__, KEYS, DEFAULTS, _main)


if __name__ == "__main__":
    sys.exit(main())
