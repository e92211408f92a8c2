"""``python -m hrsam.app [--host H] [--port N] [--sweeps DIR] [--model PRESET[=CKPT]] ...``

A local web page to try models by clicking on them: pick a finished trial of a sweep folder (or
a preset with a checkpoint), pick a validation image (its ground truth's outline and the live
IoU shown) or upload one; left click adds a positive click, right click or shift-click a
negative one. Compare mode shows two models side by side answering the same clicks. Binds
127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hrsam.app", description=__doc__.split("\n\n")[1])
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--sweeps", default="outputs/sweeps", help="folder of sweep outputs to list")
    p.add_argument("--model", action="append", default=[], metavar="PRESET[=CKPT]")
    p.add_argument("--ts", type=int, default=512, help="ts of --model entries")
    p.add_argument("--data-root", default="data/synthetic", help="the validation images' dataset")
    p.add_argument("--data-name", default="synthetic")
    p.add_argument("--images", type=int, default=16, help="validation objects listed")
    return p.parse_args(argv)


def build(args: argparse.Namespace, upload_dir: Path):
    """The engine and app for ``args``; `ValueError` for a bad model, dataset or folder."""
    from hrsam.app.models import preset_entry, trials_of, validation_images
    from hrsam.app.server import Engine, create_app
    from hrsam.data import DataConfig

    models = trials_of(Path(args.sweeps)) + [preset_entry(m, args.ts) for m in args.model]
    if not models:
        raise ValueError(
            f"no model to show: no finished trial under {args.sweeps} and no --model; run "
            "make demo first, or pass --model hrsam_tiny[=checkpoint.pt]"
        )
    images = validation_images(DataConfig(name=args.data_name, root=args.data_root), args.images)
    engine = Engine(models, images, upload_dir)
    return engine, create_app(engine)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="hrsam-app-") as tmp:
        try:
            engine, app = build(args, Path(tmp))
        except Exception as e:  # a bad --model, dataset or folder: one line
            print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"hrsam app: http://{args.host}:{args.port}/ ({len(engine.models)} models, "
              f"{len(engine.images)} images)", flush=True)  # fmt: skip
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
