"""Pretrain the tiny presets once; every sweep of the embedded default finetunes from them.

    python -m ablations.pretrain hrsam_tiny                  # the recorded recipe; resumes
    python -m ablations.pretrain                             # every preset of the recipe, in turn
    python -m ablations.pretrain --search sam_tiny           # the learning-rate search
    python -m ablations.pretrain --reproduce 3 hrsam_tiny    # its first 3 steps vs its manifest
    python -m ablations.pretrain --from-base hrsam_tiny      # the recipe's new stage on the base
    taskset -c 0 python -m ablations.pretrain sam_tiny &     # two presets side by side, one core
    taskset -c 1 python -m ablations.pretrain hrsam_tiny     # each (the recipe's threads: 1)

The recipe is ``ablations/conf/pretrain.yaml``: the same steps, samples, data, schedule and loss
for every family, and a peak learning rate per family chosen by ``--search`` (short runs at each
of the recipe's rates, ranked by mIoU@5 on the validation objects; the table goes to
``benchmarks/results/cpu/pretrain_lr_search.md``), then the recipe's ``stages`` in turn (each from
the previous one's weights with a fresh optimizer and schedule, its own ts, steps and seed). A run
trains in ``<out>/<preset>/`` and ``<out>/<preset>/stage<k>/`` (``last.pt`` every
``train.ckpt_every`` steps: a killed run resumes there; a finished stage is not trained
again), logs its loss and learning rate to MLflow (experiment ``pretrain``, one run per preset,
continued by a resumed run), validates (the val objects, every ts of ``validate.ts``) and writes
``hrsam/pretrained/<preset>.safetensors`` and its manifest (`hrsam.pretrained`): sha256, this
command, commit, steps, wall time, machine, the recipe and each stage, the first steps' losses and
samples, the validation figures.

``--reproduce K`` rebuilds the manifest's first ``K`` steps from nothing but the manifest (the
scenes those steps draw are generated alone, the dataset's length taken from the manifest) and
compares their losses with the recorded ones: equal on the CPU type and thread count that made
them, within ``--rtol`` elsewhere.

``--from-base`` continues a finished base (in ``hrsam/pretrained``, or ``$HRSAM_PRETRAINED``)
when the recipe gained a stage: the stages its manifest records must be the recipe's
first ones (the same config), they are not trained again, and the new manifest carries their
records (commit, wall time, losses) beside the new stage's. The training folders of a finished
run are not needed, so a recipe grows across sessions and machines. Bad input: one line, exit
code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ablations import tracking
from ablations.pretrain_reproduce import reproduce
from ablations.pretrain_search import best_lr, search
from ablations.pretrain_stages import (
    FIRST,
    LOSS_EVERY,
    base_start,
    check_base_unchanged,
    details,
    first_detail,
    load_base,
    stage_configs,
    train_stages,
)
from ablations.provenance import _cpu_name, git_state
from hrsam import cli, names

ROOT = Path(__file__).resolve().parent.parent
RECIPE = Path(__file__).parent / "conf" / "pretrain.yaml"
SEARCH_RECORD = ROOT / "benchmarks" / "results" / "cpu" / "pretrain_lr_search.md"
EXPERIMENT = "pretrain"


def load_recipe(path: Path = RECIPE) -> dict:
    if not Path(path).is_file():
        raise OSError(2, "No such file", str(path))
    return OmegaConf.to_container(OmegaConf.load(path))


def train_config(recipe: dict, preset: str, lr: float | None = None, steps: int | None = None):
    from hrsam.train.loop import TrainConfig

    steps = steps or recipe["steps"]
    warmup = round(recipe["train"].get("warmup", 0) * steps / recipe["steps"])
    fields = {**recipe["train"], "warmup": warmup}
    return TrainConfig(
        **fields,
        steps=steps,
        lr=lr or recipe["lr"][preset],
        seed=recipe["seed"],
        recipe="interactive",
    )


def data_config(recipe: dict, root: str | None = None):
    from hrsam.data import DataConfig

    return DataConfig(**recipe["data"], **({"root": root} if root else {}))


def build_seeded(preset: str, tc, detail: int | None = None):
    """``preset`` as the first stage starts it: weights from ``tc``'s seed; ``detail`` the channels
    of its decoder's detail path where not the preset's own (0 where a later stage adds it)."""
    import torch

    from hrsam.models import build_model

    torch.manual_seed(tc.seed)
    return build_model(preset, training=True, **({} if detail is None else {"detail": detail}))


def dirty_paths() -> list[str]:
    """The files that differed from the commit when the run started (``git status``)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(line[3:] for line in out.splitlines() if line.strip())


def machine(threads: int) -> dict:
    import torch

    return {
        "cpu": _cpu_name(),
        "threads": threads,
        "cores_pinned": sorted(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def first_samples(dataset, tc, k: int = FIRST) -> list[list]:
    """[index, name] of the sample each of the first ``k`` steps draws (`hrsam.train.loop`: the
    first draw of the step's generator ``(seed, step, 0)`` picks the index)."""
    out = []
    for s in range(k):
        rng = np.random.default_rng([tc.seed, s, 0])
        i = int(rng.integers(len(dataset)))
        out.append([i, dataset[i].name])
    return out


class StepLog:
    """Progress on stdout every ``every`` steps (mean loss, steps/s, ETA) and the mean loss
    and learning rate of every `LOSS_EVERY` steps to MLflow."""

    def __init__(self, label: str, series, every: int = 500, offset: int = 0) -> None:
        self.label, self.series, self.every = label, series, every
        self.offset = offset  # steps of the stages before this one (MLflow's step axis)
        self.start, self.first_step, self.window = time.perf_counter(), None, []

    def __call__(self, step: int, values: dict[str, float]) -> None:
        if self.first_step is None:
            self.first_step = step - 1
        self.window.append(values[names.TRAIN_LOSS])
        if step % LOSS_EVERY == 0 and self.series is not None:
            mean = float(np.mean(self.window[-LOSS_EVERY:]))
            self.series(self.offset + step, {names.TRAIN_LOSS: mean, names.LR: values[names.LR]})
        if step % self.every == 0:
            self.report(step)
            self.window = self.window[-LOSS_EVERY:]

    def report(self, step: int, total: int | None = None) -> None:
        done = step - (self.first_step or 0)
        rate = done / max(1e-9, time.perf_counter() - self.start)
        total = total or self.total
        eta = (total - step) / rate / 60 if rate else float("nan")
        loss = float(np.mean(self.window[-self.every :])) if self.window else float("nan")
        print(
            f"{self.label} step {step}/{total} loss {loss:.4f} {rate:.2f} steps/s "
            f"eta {eta:.1f} min",
            flush=True,
        )


def validate(model, recipe: dict, data, label: str) -> dict[str, dict]:
    """The validation figures: per ts of ``validate.ts``, NoC/NoF/mIoU@k and click use on the
    val objects (hrsam protocol, ``validate.max_clicks`` clicks)."""
    from hrsam.interactive.evaluate import evaluate

    val = data.build("val")
    out = {}
    for ts in recipe["validate"]["ts"]:
        bar, text = cli.Progress(len(val), "obj"), f"{label} val ts {ts}"
        result = evaluate(
            model.eval(),
            val,
            ts=ts,
            max_clicks=recipe["validate"]["max_clicks"],
            progress=lambda i, n, name, bar=bar, text=text: bar(i, text),
        )
        out[str(ts)] = {k: rounded(v) for k, v in result.summary().items() if _kept(k)}
        out[str(ts)]["objects"] = len(val)
    return out


def _kept(metric: str) -> bool:
    return not metric.endswith("_ms") and metric not in (names.SPC_S, names.PEAK_MEM_MB)


def rounded(v):
    return round(float(v), 6) if isinstance(v, float | np.floating) else v


class _State:
    """``<out>/<preset>/run.json``: the MLflow run, the start's facts and the wall time of every
    stretch of the run (a resumed run adds one)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "run.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"stretches": []}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def _mlflow_run(state: _State, uri: str | None, preset: str, params: dict):
    """The preset's pretraining run (created once, continued by a resumed run); None without
    a store or when MLflow cannot be reached (the run folder stays the record)."""
    if uri is None:
        return None
    try:
        c = tracking.client(uri)
        run_id = state.data.get("mlflow_run_id")
        if run_id is None:
            exp = tracking.experiment_id(c, EXPERIMENT)
            run = c.create_run(exp, run_name=preset, tags={"hrsam.role": "pretrain"})
            run_id = state.data["mlflow_run_id"] = run.info.run_id
            for key, value in params.items():
                c.log_param(run_id, key, str(value)[:6000])
            state.save()
        else:
            c.update_run(run_id, status="RUNNING")
        return c, run_id
    except Exception as e:  # the training goes on without MLflow
        print(f"MLflow: not logging ({str(e).splitlines()[0][:200]})", file=sys.stderr)
        return None


def _flat(prefix: str, tree: dict) -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(_flat(f"{key}.", v) if isinstance(v, dict) else {key: v})
    return out


def pretrain(
    preset: str,
    recipe: dict,
    out: Path,
    export_to: Path | None,
    uri: str | None,
    command: str,
    data_root: str | None = None,
    base: Path | None = None,
) -> dict:
    """Trains ``preset`` with the recipe (resuming ``out/<preset>``; on the finished base in
    ``base`` when given: see `base_start`), validates, and writes its weights and manifest to
    ``export_to``. Returns the manifest."""
    import torch

    from hrsam import pretrained

    torch.set_num_threads(recipe["threads"])
    tc = train_config(recipe, preset)
    data = data_config(recipe, data_root)
    folder = out / preset
    state = _State(folder)
    bar = cli.Progress(data.n_train + data.n_val, "scenes")
    dataset = data.build("train", progress=lambda i, n: bar(i, "scenes"))
    model = build_seeded(preset, tc, first_detail(details(recipe)))
    if base is not None and "init_sha256" not in state.data:  # continues the base's record
        state.data.update(base_start(preset, recipe, base))
        state.save()
    held = state.data.get("base", {}).get("stages", [])  # the stages the base holds
    if held:
        load_base(model, preset, state.data["base"], folder)
    if "init_sha256" not in state.data:  # the run's start: its commit is the manifest's
        state.data.update(
            **git_state(ROOT),
            dirty_paths=dirty_paths(),
            init_sha256=pretrained.state_sha256(model.state_dict()),
            init_detail=model.preset.detail,  # the detail path stage 1 trains with (--reproduce)
            first_samples=first_samples(dataset, tc),
            dataset_objects=len(dataset),
        )
        state.save()
    params = _flat("", {"preset": preset, "train": dataclasses.asdict(tc), "data": recipe["data"]})
    run = _mlflow_run(state, uri, preset, {**params, "threads": recipe["threads"]})
    series = tracking.SeriesLogger(uri, run[1], every_s=10) if run else None
    first, stages, offset = train_stages(model, dataset, recipe, tc, preset, state, series)
    if series is not None:
        series.flush()
    figures = validate(model, recipe, data, preset)
    info = {
        "command": command,
        "git_sha": state.data["git_sha"],  # at the run's start (each stretch's in run.json)
        "git_dirty": state.data["git_dirty"],
        "dirty_paths": state.data.get("dirty_paths", []),  # none of them on the training path
        "steps": offset,  # every stage's
        "wall_s": round(
            state.data.get("base", {}).get("wall_s", 0.0)
            + sum(s["end"] - s["start"] for s in state.data["stretches"]),
            1,
        ),
        "machine": machine(recipe["threads"]),
        "train": dataclasses.asdict(tc),
        "data": {**data.synthetic_spec(), "objects_train": len(dataset)},
        "init_sha256": state.data["init_sha256"],
        "init_detail": state.data.get("init_detail", 0),  # runs before the field: no path
        "first_samples": state.data["first_samples"],
        **first,
        "stages": stages,
        "validation": figures,
    }
    if held:
        info["base_sha256"] = state.data["base"]["sha256"]  # the finished base it continued
    if run is not None:
        _log_validation(*run, figures)
    if export_to is None:
        return info
    return pretrained.save(model.cpu(), preset, info, export_to)


def _log_validation(c, run_id: str, figures: dict[str, dict]) -> None:
    for ts, values in figures.items():
        for k, v in values.items():
            if isinstance(v, float | int):
                c.log_metric(run_id, f"val_ts{ts}_{k}", float(v))
    c.set_terminated(run_id, "FINISHED")


def _parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m ablations.pretrain",
        description=__doc__.split("\n\n")[0],
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("presets", nargs="*", help="presets to pretrain (default: the recipe's)")
    p.add_argument("--search", action="store_true", help="run the learning-rate search")
    p.add_argument("--reproduce", type=int, metavar="K", help="check the first K steps")
    p.add_argument("--rtol", type=float, default=1e-4, help="--reproduce's relative tolerance")
    p.add_argument("--recipe", default=str(RECIPE.relative_to(ROOT)), help="the recipe YAML")
    p.add_argument("--out", default="outputs/pretrain", help="training folders")
    p.add_argument("--export-to", default=None, help="weights folder (default: hrsam/pretrained)")
    p.add_argument("--data-root", default=None, help="the scenes' root (default: data/synthetic)")
    p.add_argument(
        "--from-base",
        action="store_true",
        help="train only the recipe's stages after the finished base's (hrsam/pretrained or "
        "$HRSAM_PRETRAINED)",
    )
    p.add_argument(
        "--mlflow", default="sqlite:///mlflow.db", help="tracking URI ('none': no MLflow)"
    )
    return p


def _check(presets: list[str], recipe: dict) -> None:
    unknown = [p for p in presets if p not in recipe["presets"]]
    if unknown:
        raise cli.UsageError(
            f"unknown preset {unknown[0]!r}; the recipe pretrains: {', '.join(recipe['presets'])}"
        )
    from hrsam.models import PRESETS

    added = details(recipe)
    for preset in presets:  # before any training: a bad stage stops the run at its start
        stage_configs(recipe, train_config(recipe, preset), preset)
        if added and set(added.values()) != {PRESETS[preset].detail}:
            k, n = next(iter(added.items()))
            raise cli.UsageError(
                f"recipe stage {k}: detail={n}, but {preset}'s detail path has "
                f"{PRESETS[preset].detail} channels; a stage adds the preset's own path"
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
    except OSError as e:
        print(f"error: --recipe {args.recipe}: {e.strerror}", file=sys.stderr)
        return 2
    presets = args.presets or recipe["presets"]
    out = Path(args.out)
    base = None
    if args.from_base:
        from hrsam import pretrained

        base = pretrained.folder_of()
    try:
        _check(presets, recipe)
        if args.reproduce is not None:
            return _main_reproduce(presets, args)
        for preset in presets if base is not None else []:  # before any training
            run = _State(out / preset)
            if not run.path.exists():  # a new run
                base_start(preset, recipe, base)
            elif "base" in run.data:  # a continued run resumes from the base it started from
                check_base_unchanged(preset, run.data["base"], out / preset)
    except (cli.UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from hrsam import pretrained

    uri = None if args.mlflow == "none" else tracking.absolute_uri(args.mlflow)
    if args.search:
        results = search(presets, recipe, out, uri, args.data_root)
        for preset in presets:
            print(f"{preset}: best lr {best_lr(results, preset):g}")
        return 0
    export = pretrained.folder_of(args.export_to and Path(args.export_to))
    for preset in presets:
        extra = [] if args.recipe == _parser().get_default("recipe") else ["--recipe", args.recipe]
        extra += ["--from-base"] if args.from_base else []
        command = shlex.join(["python", "-m", "ablations.pretrain", *extra, preset])
        info = pretrain(preset, recipe, out, export, uri, command, args.data_root, base)
        print(f"{preset}: {export / info['file']} sha256 {info['sha256'][:12]}")
    return 0


def _main_reproduce(presets: list[str], args) -> int:
    bad = 0
    for preset in presets:
        folder = Path(args.export_to) if args.export_to else None
        want, got = reproduce(preset, args.reproduce, folder)
        worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(want, got, strict=True))
        ok = worst <= args.rtol
        bad += not ok
        print(
            f"{preset}: first {len(got)} losses {'match' if ok else 'DIFFER'} "
            f"(largest relative difference {worst:.2e}, tolerance {args.rtol:g})"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
