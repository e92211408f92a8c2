"""The pretraining recipe's stages (``stages`` in ``ablations/conf/pretrain.yaml``): their
configs, training and records, and continuing a finished base (``--from-base``). Used by
`ablations.pretrain`."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ablations.provenance import git_state
from hrsam import cli

ROOT = Path(__file__).resolve().parent.parent
FIRST = 5  # first steps whose losses and samples a manifest records
LOSS_EVERY = 100  # steps per logged loss (the mean over them)
STAGE_KEYS = ("ts", "steps", "lr", "warmup", "seed")  # a stage's record that a base must match
MODEL_KEYS = ("detail",)  # what a stage may change in the model: `details`


def stage_configs(recipe: dict, tc, preset: str) -> list:
    """The TrainConfig of every stage after the first (``recipe["stages"]``): each continues from
    the previous stage's weights with a fresh optimizer and schedule, the first stage's config
    with the stage's own keys (ts, steps, warmup, seed, ...) changed. A stage's ``lr`` is one
    rate, or a rate per preset as the recipe's own (the preset's stage-1 rate where it names
    none)."""
    fields = {f.name for f in dataclasses.fields(tc)}
    out = []
    for k, stage in enumerate(recipe.get("stages") or [], start=2):
        unknown = sorted(set(stage) - fields - set(MODEL_KEYS))
        if unknown:
            raise ValueError(
                f"recipe stage {k}: unknown key {unknown[0]!r}; a stage sets TrainConfig's "
                f"keys ({', '.join(sorted(fields))}) and the model's {', '.join(MODEL_KEYS)}"
            )
        stage = {key: v for key, v in stage.items() if key not in MODEL_KEYS}
        if isinstance(stage.get("lr"), dict):
            stage = {**stage, "lr": stage["lr"].get(preset, tc.lr)}
        try:
            out.append(dataclasses.replace(tc, **stage))
        except ValueError as e:
            raise ValueError(f"recipe stage {k}: {e}") from None
    return out


def stage_changes(tc, stc) -> dict:
    """The TrainConfig keys a later stage ``stc`` sets beyond `STAGE_KEYS` (the click rounds'
    ``gamma`` and ``max_clicks``, the loss, ...): {key: value} where it differs from the first
    stage's ``tc``. A manifest records them with the stage, and a base is checked against them."""
    return {
        f.name: getattr(stc, f.name)
        for f in dataclasses.fields(stc)
        if f.name not in STAGE_KEYS and getattr(stc, f.name) != getattr(tc, f.name)
    }


def details(recipe: dict) -> dict[int, int]:
    """{stage: channels} of the stages that add the decoder's detail path (a stage's ``detail``:
    `hrsam.models.detail.add_detail`, so the stage starts as the previous one's function)."""
    out = {}
    for k, stage in enumerate(recipe.get("stages") or [], start=2):
        n = stage.get("detail")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"recipe stage {k}: detail={n!r}; the path's channels, an int >= 1")
        if n is not None:
            out[k] = n
    if len(out) > 1:
        raise ValueError(f"recipe stages {sorted(out)} each add a detail path; one may")
    return out


def first_detail(added: dict[int, int]) -> int | None:
    """The detail channels stage 1 builds the preset with: none (0) where a later stage adds the
    path, the preset's own (None) otherwise."""
    return 0 if added else None


def add_stage_detail(model, added: dict[int, int], k: int, seed: int) -> None:
    """The detail path into ``model`` where stage ``k`` adds one, its new weights drawn from
    ``seed`` (the stage's)."""
    import torch

    from hrsam.models.detail import add_detail

    if k in added:
        torch.manual_seed(seed)
        add_detail(model, added[k])


def base_start(preset: str, recipe: dict, folder: Path) -> dict:
    """The start of a run that continues ``preset``'s finished base in ``folder``: the base's
    facts (commit, first samples, ...) and, under ``base``, its sha256, wall time and the record
    of every stage it holds. Raises `cli.UsageError` (before any training) unless the base's
    stages are the recipe's first ones and the recipe has more."""
    from ablations.pretrain import train_config
    from hrsam import pretrained

    try:
        info = pretrained.verify(preset, folder)
    except (OSError, ValueError) as e:  # no base, or a file that is not its manifest's
        raise cli.UsageError(f"--from-base: {e}") from None
    tc = train_config(recipe, preset)
    want = json.loads(json.dumps(dataclasses.asdict(tc)))
    for key in sorted(set(want) | set(info["train"])):
        if want.get(key) != info["train"].get(key):
            raise cli.UsageError(
                f"--from-base: {preset}'s base trained its first stage with {key}="
                f"{info['train'].get(key)!r}, the recipe says {want.get(key)!r}; a base "
                "continues only the recipe it was made with"
            )
    planned, recorded = stage_configs(recipe, tc, preset), info.get("stages") or []
    added = details(recipe)
    for stage, stc in zip(recorded, planned, strict=False):
        want = {key: getattr(stc, key) for key in STAGE_KEYS} | stage_changes(tc, stc)
        want["detail"] = added.get(stage["stage"])
        for key, value in want.items():
            if stage.get(key) != value:
                raise cli.UsageError(
                    f"--from-base: {preset}'s base trained stage {stage['stage']} with {key}="
                    f"{stage.get(key)!r}, the recipe says {value!r}"
                )
    if len(recorded) >= len(planned):
        raise cli.UsageError(
            f"--from-base: {preset}'s base already holds every stage of the recipe "
            f"({1 + len(recorded)}); add a stage to the recipe to train one"
        )
    first = {"first_losses": info["first_losses"], "final_loss": info["final_loss"]}
    return {
        **{key: info[key] for key in ("git_sha", "git_dirty", "dirty_paths", "init_sha256")},
        "init_detail": info.get("init_detail", 0),  # bases before the field had no path
        "first_samples": info["first_samples"],
        "dataset_objects": info["data"]["objects_train"],
        "base": {
            "sha256": info["sha256"],
            "folder": str(folder),
            "wall_s": info["wall_s"],
            "stages": [first, *recorded],
        },
    }


def load_base(model, preset: str, base: dict, folder: Path) -> None:
    """The base's weights into ``model`` (with the detail path where a stage the base holds added
    one), unless a stage after it has begun (its ``last.pt`` holds newer ones); the file must
    still be the one the run started from."""
    from hrsam import pretrained

    held = {s["stage"]: s["detail"] for s in base["stages"][1:] if s.get("detail")}
    for stage in base["stages"][1:]:
        add_stage_detail(model, held, stage["stage"], stage["seed"])
    if check_base_unchanged(preset, base, folder):  # load_state checks the file's sha256
        model.load_state_dict(pretrained.load_state(preset, Path(base["folder"])), strict=True)


def check_base_unchanged(preset: str, base: dict, folder: Path) -> bool:
    """Whether a continued run in ``folder`` still needs its base's weights (its first new stage
    has no checkpoint yet); raises `cli.UsageError` if it does and the base (run.json's
    ``base``) is no longer the one the run started from."""
    from hrsam import pretrained

    if (folder / f"stage{len(base['stages']) + 1}" / "last.pt").exists():
        return False
    path = Path(base["folder"])
    info = pretrained.manifest(preset, path)
    if info["sha256"] != base["sha256"]:
        raise cli.UsageError(
            f"--from-base: {pretrained.weights_path(preset, path)} is sha256 "
            f"{info['sha256'][:12]}... now, the run in {folder} started from "
            f"{base['sha256'][:12]}...; start it again in a new --out"
        )
    return True


def train_stages(model, dataset, recipe: dict, tc, preset: str, state, series):
    """Every stage of the recipe in turn in ``state``'s folder (those a continued base holds are
    its record, not trained again): (the first stage's losses, the later stages' records, the
    steps of all)."""
    from ablations.pretrain import dirty_paths

    folder = state.path.parent
    held = state.data.get("base", {}).get("stages", [])  # the stages the base holds
    if held:
        first = held[0]
    else:
        result = train_stage(model, dataset, tc, folder, state, series, preset, 1, 0)
        first = {
            "first_losses": [float(x) for x in result.losses[:FIRST]],
            "final_loss": float(np.mean(result.losses[-LOSS_EVERY:])),
        }
    stages, offset, added = [], tc.steps, details(recipe)
    for k, stc in enumerate(stage_configs(recipe, tc, preset), start=2):
        if k <= len(held):  # the base's record of it
            stages.append(held[k - 1])
            offset += stc.steps
            continue
        key = f"stage{k}"
        if key not in state.data:  # the stage's start: its own commit
            state.data[key] = {**git_state(ROOT), "dirty_paths": dirty_paths()}
            state.save()
        add_stage_detail(model, added, k, stc.seed)  # a resumed stage's last.pt then loads
        done = train_stage(model, dataset, stc, folder / key, state, series, preset, k, offset)
        record = stage_record(stc, done, state, k, added.get(k))
        stages.append({**record, **stage_changes(tc, stc)})
        offset += stc.steps
    return first, stages, offset


def train_stage(model, dataset, tc, folder: Path, state, series, preset: str, k: int, offset):
    """Stage ``k`` of the recipe in ``folder`` (resumed from its ``last.pt``); a stretch that
    trained records its wall time in run.json."""
    import torch

    from ablations.pretrain import StepLog, machine
    from hrsam.train.loop import train

    logger = StepLog(preset if k == 1 else f"{preset} stage {k}", series, offset=offset)
    logger.total = tc.steps
    start = time.time()
    resumed_at = _checkpoint_step(folder / "last.pt")
    result = train(model, dataset, tc, folder, on_step=logger)
    if result.step > resumed_at:
        stretch = {"start": start, "end": time.time(), "to_step": result.step, "stage": k}
        stretch.update(git_sha=git_state(ROOT)["git_sha"], machine=machine(torch.get_num_threads()))
        state.data["stretches"].append(stretch)
        state.save()
    return result


def _checkpoint_step(path: Path) -> int:
    """The step a training folder's ``last.pt`` holds (0 without one)."""
    import torch

    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def stage_record(tc, result, state, k: int, detail: int | None = None) -> dict:
    """A later stage in the manifest: what differs from the first (``detail``: the channels of
    the detail path it added), its commit, wall time and the machines its stretches ran on (a
    stage may run on another machine than the first)."""
    own = [s for s in state.data["stretches"] if s.get("stage", 1) == k]
    machines = [s["machine"] for s in own if "machine" in s]
    return {
        "stage": k,
        "ts": tc.ts,
        "steps": tc.steps,
        "lr": tc.lr,
        "warmup": tc.warmup,
        "seed": tc.seed,
        **({"detail": detail} if detail else {}),
        **{
            key: state.data[f"stage{k}"].get(key) for key in ("git_sha", "git_dirty", "dirty_paths")
        },
        "wall_s": round(sum(s["end"] - s["start"] for s in own), 1),
        "machines": [m for i, m in enumerate(machines) if m not in machines[:i]],
        "first_losses": [float(x) for x in result.losses[:FIRST]],
        "final_loss": float(np.mean(result.losses[-LOSS_EVERY:])),
    }
