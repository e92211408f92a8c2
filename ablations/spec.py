"""A grid's trials as frozen, typed specs: ``expand`` reads the composed config tree once and
every later step (the job's `ablations.resolve`, training, evaluation, the record) reads the spec.

A `TrialSpec` holds what was requested, nothing resolved (``auto`` and the preset's defaults stay
open: the job settles them on its own device): the plain requested tree (``config``, recorded as
the run's params and hashed into ``trial_id``) and its typed sections, built here once
(``model``, ``train`` with its shared ``base``, ``data``, ``eval``, ``bench``). Every check that
needs no device runs here, so a bad point fails before anything runs (`ConfigError`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from omegaconf import OmegaConf

from ablations.config import (
    BASES,
    NOT_HASHED,
    SWEEP_TRAIN_KEYS,
    BenchCfg,
    ConfigError,
    SweepCfg,
    _set,
    baseline_point,
    fmt,
    get,
    merge,
    one_line,
    short_hash,
)
from hrsam.data import DataConfig
from hrsam.data.datasets import DatasetError
from hrsam.interactive.evaluate import EvalConfig
from hrsam.precision import PRECISIONS
from hrsam.train.loop import TrainConfig


@dataclass(frozen=True)
class ModelRequest:
    """The model as requested: a preset name and the keys set beside it (None: the preset's)."""

    preset: str
    arch: dict  # the ARCH_KEYS set in the config: they change the weights
    kernel: str | None  # None / "auto": the job's fastest exact kernel
    scan: str | None  # None / "auto": the job's default backend; "none": no cycle scan
    checkpoint: str | None  # evaluated as is (trials that do not train)


class Base(NamedTuple):
    """Where a trial's finetune starts: the shared base training (``train`` its config) or the
    preset's committed pretrained weights (``sha256`` theirs); ``key`` names it in the cache
    and the record."""

    key: str
    train: TrainConfig | None
    preset: str
    sha256: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True, eq=False)
class TrialSpec:
    """One point of a grid as requested: id, label, the plain requested tree and its typed
    sections. Hashable and compared by ``trial_id`` (the hash of the requested tree)."""

    trial_id: str
    label: str
    config: dict  # the requested tree: the run's params; nothing downstream decides from it
    train_key: str | None  # hash of what changes the weights; None when evaluating a checkpoint
    model: ModelRequest
    train: TrainConfig | None  # None: the trial evaluates ``model.checkpoint``
    base: Base | None  # where the finetune starts: a shared base training or pretrained weights
    data: DataConfig
    eval: EvalConfig
    bench: BenchCfg
    seed: int
    device: str  # "auto", "cpu" or "cuda": resolved in the job
    precision: str
    tf32: bool

    def __hash__(self) -> int:
        return hash(self.trial_id)

    def __eq__(self, other) -> bool:
        return isinstance(other, TrialSpec) and other.trial_id == self.trial_id

    @classmethod
    def of(cls, trial_id: str, label: str, cfg: dict, train_key: str | None) -> TrialSpec:
        """The spec of a checked requested tree (`check_trial` has run on it)."""
        m = cfg["model"]
        training = train_key is not None
        return cls(
            trial_id,
            label,
            cfg,
            train_key,
            ModelRequest(
                m["preset"], model_overrides(m, ARCH_KEYS), m["kernel"], m["scan"], m["checkpoint"]
            ),
            train_config(cfg) if training else None,
            base_config(cfg) if training else None,
            data_config(cfg),
            eval_config(cfg),
            BenchCfg(**cfg["bench"]),
            cfg["seed"],
            cfg["device"],
            cfg.get("precision", "fp32"),
            cfg.get("tf32", False),
        )


@dataclass(frozen=True)
class Sweep:
    grid: str
    description: str
    config: dict  # the sweep-level config (executor, mlflow, out, ...)
    trials: list[TrialSpec]
    varying: list[str]  # the keys that differ between trials

    @property
    def experiment(self) -> str:
        return self.config["experiment"] or self.grid

    @property
    def sweep_id(self) -> str:
        return short_hash({"grid": self.grid, "trials": sorted(t.trial_id for t in self.trials)})

    @property
    def folder(self) -> Path:
        return Path(self.config["out"]) / self.experiment


def check_trial(cfg: dict, train: bool) -> None:
    """Everything about one trial that can be known without running it, on any machine (nothing
    here depends on the host: no device, no compiled extension)."""
    from hrsam.attention import list_attention
    from hrsam.data import list_datasets
    from hrsam.models import get_preset

    if cfg.get("precision", "fp32") not in PRECISIONS:
        raise ConfigError(f"precision={cfg['precision']!r}; valid: {', '.join(PRECISIONS)}")
    m = cfg["model"]
    try:
        get_preset(m["preset"], **model_overrides(m))
    except ValueError as e:
        msg = one_line(e)
        if "unknown attention" in msg and m["attention"] not in list_attention():
            msg = f"unknown attention {m['attention']!r}; valid: {', '.join(list_attention())}"
        raise ConfigError(f"model: {msg}") from None
    try:
        eval_config(cfg)
    except ValueError as e:
        raise ConfigError(_in_section("eval", e)) from None
    ts = cfg["bench"]["ts"]
    if ts != 0 and (ts < 16 or ts % 16):
        raise ConfigError(f"bench.ts={ts} must be a positive multiple of 16")
    data = cfg["data"]
    if data["name"] not in list_datasets():
        raise ConfigError(f"data.name={data['name']!r}; valid: {', '.join(list_datasets())}")
    try:
        data_config(cfg)  # the synthetic generator's spec: a scene it cannot draw
    except ValueError as e:
        raise ConfigError(_in_section("data", e)) from None
    if data["name"] not in ("synthetic", "photos") and not Path(data["root"]).is_dir():
        raise ConfigError(
            f"data.root={data['root']!r} ({data['name']}) is not a folder; point data.root "
            f"(or data.roots.{data['name']}) at the dataset"
        )
    try:
        data_config(cfg).check()  # a folder without the dataset's pairs (empty, wrong layout)
    except DatasetError as e:
        raise ConfigError(f"data.root={data['root']!r} ({data['name']}): {one_line(e)}") from None
    if train:
        try:
            train_config(cfg)
        except ValueError as e:
            raise ConfigError(_in_section("train", e)) from None
        base_ts = cfg["train"]["base_ts"]
        if base_ts and (base_ts < 16 or base_ts % 16):
            raise ConfigError(
                f"train.base_ts={base_ts} must be 0 (the finetune's train.ts) or a positive "
                "multiple of 16"
            )
        if cfg["train"]["recipe"] != "interactive":
            raise ConfigError(
                f"train.recipe={cfg['train']['recipe']!r}; sweeps train with: interactive"
            )
    ckpt = m["checkpoint"]
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"model.checkpoint={ckpt!r} does not exist")


def _in_section(section: str, e: Exception) -> str:
    """``ts=500 must be ...`` -> ``eval.ts=500 must be ...``; other messages get ``eval: ``."""
    msg = one_line(e)
    head = msg.split("=", 1)[0]
    return f"{section}.{msg}" if head.isidentifier() else f"{section}: {msg}"


def bench_ts(cfg: dict) -> int:
    """The ts a trial's benchmark runs at: ``bench.ts``, or the evaluation's where it is 0 (the
    rule's one home: the plan settles it, so a trial's spec and record hold the number)."""
    return cfg["bench"]["ts"] or cfg["eval"]["ts"]


def settle_base(cfg: dict) -> None:
    """Checks ``train.base`` (one of `BASES`; ``pretrained`` needs the preset's verified
    weights) and writes the weights' sha256 into ``train.base_sha256`` (a value given there must
    be theirs), so the trial id and the training key name the weights."""
    from hrsam import pretrained
    from hrsam.models import CheckpointError

    t, preset = cfg["train"], cfg["model"]["preset"]
    if t["base"] not in BASES:
        raise ConfigError(f"train.base={t['base']!r}; valid: {', '.join(BASES)}")
    if t["base"] != "pretrained":
        return
    try:
        sha = _verified_sha(pretrained.weights_path(preset), pretrained.manifest_path(preset))
    except CheckpointError as e:
        raise ConfigError(f"train.base=pretrained: {one_line(e)}; or train.base=scratch") from None
    if t["base_sha256"] and t["base_sha256"] != sha:
        raise ConfigError(
            f"train.base_sha256={t['base_sha256']!r} is not the sha256 of {preset}'s pretrained "
            f"weights ({sha}): the weights changed since; drop the key to use them"
        )
    t["base_sha256"] = sha


def train_config(cfg: dict) -> TrainConfig:
    """The trial's `TrainConfig`: every ``train.*`` key, seeded with the trial's seed."""
    fields = {k: v for k, v in cfg["train"].items() if k not in SWEEP_TRAIN_KEYS}
    return TrainConfig(**fields, seed=cfg["seed"])


def base_config(cfg: dict) -> Base | None:
    """Where a trial's finetune starts (`Base`): the preset's pretrained weights
    (``train.base=pretrained``, keyed by their sha256), or the shared base training: the trial's
    recipe for ``train.base_steps`` steps on the preset's own architecture, keyed by what changes
    its weights, so sweeps of every grid share it; None when the trial trains from its init."""
    preset = cfg["model"]["preset"]
    if cfg["train"].get("base") == "pretrained":
        sha = cfg["train"]["base_sha256"]
        return Base(f"pretrained-{sha[:12]}", None, preset, sha)
    steps = cfg["train"].get("base_steps", 0)
    if not steps:
        return None
    tc = train_config(cfg)
    t = cfg["train"]
    tc = dataclasses.replace(
        tc, steps=steps, lr=t.get("base_lr") or tc.lr, ts=t.get("base_ts") or tc.ts
    )
    spec = {"preset": preset, "train": dataclasses.asdict(tc), "data": _data_key(cfg)}
    from hrsam.models import PRESETS

    detail = PRESETS[preset].detail if preset in PRESETS else 0
    if detail:  # the preset's decoder detail path (bases trained before it had none)
        spec["detail"] = detail
    return Base(short_hash(spec), tc, preset)


def data_config(cfg: dict) -> DataConfig:
    return DataConfig(**{k: v for k, v in cfg["data"].items() if k != "roots"})


def eval_config(cfg: dict) -> EvalConfig:
    return EvalConfig(**cfg["eval"])


ARCH_KEYS = ("attention", "window_size", "cycle_repeats", "anchor_sizes", "detail")  # the weights
COMPUTE_KEYS = ("kernel", "scan")  # compute the same function: not in the training key


def model_overrides(model_cfg: dict, keys: tuple[str, ...] = ARCH_KEYS + COMPUTE_KEYS) -> dict:
    """The model keys set in the config (None: the preset's), as `build_model` overrides."""
    return {k: model_cfg[k] for k in keys if model_cfg[k] is not None}


def training_key(cfg: dict) -> str:
    """Hash of what changes the trained weights: the kernel and scan backend do not (they compute
    the same function), so e.g. every kernel of one attention pattern shares one training."""
    m = {k: v for k, v in cfg["model"].items() if k not in (*COMPUTE_KEYS, "checkpoint")}
    m["scan_on"] = cfg["model"]["scan"] != "none"
    train = _hash_view({"train": cfg["train"]})["train"]
    return short_hash({"model": m, "train": train, "data": _data_key(cfg), "seed": cfg["seed"]})


def _data_key(cfg: dict) -> dict:
    """The data keys that change trained weights (not ``limit``, an evaluation subset, nor
    ``roots``, where the files live)."""
    return {k: v for k, v in cfg["data"].items() if k not in ("limit", "roots")}


# Keys added after sweeps were recorded, with the value every earlier trial ran with: left out
# of a hash while they hold it, so those sweeps keep their trial ids and resume.
_LATER_KEYS = {"precision": "fp32", "tf32": False, "train.precision": None}
_LATER_KEYS.update({"data.version": 2, "data.objects": "2-4"})  # the scene generator (#30)
_LATER_KEYS.update({"train.base": "scratch", "train.base_sha256": ""})  # pretrained bases (#38)
# model.detail is not among them: the tiny presets gained the path with the key, so a trial
# recorded before it is another model (a new id; a shared base too: `base_config`)


def _hash_view(cfg: dict) -> dict:
    out = copy.deepcopy(cfg)
    for key, default in _LATER_KEYS.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and leaf in node and node[leaf] == default:
            del node[leaf]
    return out


def expand(sweep_cfg: dict, grid_spec: dict) -> Sweep:
    """The grid's trials as frozen `TrialSpec` s, as requested (``auto`` and preset defaults stay
    unresolved: the job resolves them on its own device), each checked. Raises `ConfigError` on
    the first bad one."""
    points, train = _points(sweep_cfg, grid_spec)
    trials, seen = [], set()
    for point in points:
        for r in range(sweep_cfg["repeats"]):
            label = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in point.items())
            cfg = _point_config(sweep_cfg, grid_spec, point, r, train, label)
            trial_id = short_hash(_hash_view(cfg))  # as requested: the same on every host
            if trial_id in seen:
                continue
            seen.add(trial_id)
            if sweep_cfg["repeats"] > 1:
                label = f"{label}, seed={cfg['seed']}" if label else f"seed={cfg['seed']}"
            train_key = training_key(cfg) if train else None
            trials.append(TrialSpec.of(trial_id, label or "default", cfg, train_key))
    keys = sorted({k for p in points for k in p})
    if sweep_cfg["report"]["baseline"]:  # a bad baseline fails here, before anything runs
        grid_points = list(dict.fromkeys(tuple(get(t.config, k) for k in keys) for t in trials))
        baseline_point(sweep_cfg["report"]["baseline"], keys, grid_points)
    if sweep_cfg["repeats"] > 1:
        keys.append("seed")
    return Sweep(sweep_cfg["grid"], grid_spec.get("description", ""), sweep_cfg, trials, keys)


def _points(sweep_cfg: dict, grid_spec: dict) -> tuple[list[dict], bool]:
    """The grid's points (the product of ``params``, then ``include``'s extra points; a key set
    on the command line is not swept, ``key=a,b`` is an axis) and whether its trials train."""
    params = dict(grid_spec.get("params") or {})
    include = list(grid_spec.get("include") or [])
    fixed = set(grid_spec.get("fixed", []))
    for key in fixed | set(grid_spec.get("axes", {})):  # the command line wins over the grid
        params.pop(key, None)
        include = [{k: v for k, v in p.items() if k != key} for p in include]
    params.update(grid_spec.get("axes", {}))
    for key, values in params.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {sweep_cfg['grid']}: params.{key} must be a non-empty list")
    # the grid says whether its trials train; train.enabled on the command line wins
    train = sweep_cfg["train"]["enabled"]
    if "train.enabled" not in fixed:
        train = bool(grid_spec.get("train", train))
    combos = itertools.product(*params.values())
    points = [dict(zip(params, combo, strict=True)) for combo in combos]
    points += [p for p in include if p not in points]
    return points or [{}], train


def _point_config(
    sweep_cfg: dict, grid_spec: dict, point: dict, repeat: int, train: bool, label: str
) -> dict:
    """One trial's requested tree: the sweep's config, the grid's ``set`` keys, the point, the
    repeat's seed; typed through the schema and checked (`check_trial`)."""
    fixed = set(grid_spec.get("fixed", []))
    cfg = copy.deepcopy({k: v for k, v in sweep_cfg.items() if k not in NOT_HASHED})
    cfg["train"]["enabled"] = train
    for key, value in (grid_spec.get("set") or {}).items():
        if key in fixed:  # the command line wins over the grid
            continue
        if not train and key.removeprefix("model.") in ARCH_KEYS:
            continue  # a setting the grid trains with: given weights fix their own
        _set(cfg, key, value)
    for key, value in point.items():
        _set(cfg, key, value)
    cfg["seed"] = sweep_cfg["seed"] + repeat
    if cfg["data"]["name"] in cfg["data"]["roots"]:
        cfg["data"]["root"] = cfg["data"]["roots"][cfg["data"]["name"]]
    if not train:
        preset = cfg["model"]["preset"]
        cfg["model"]["checkpoint"] = cfg["model"]["checkpoint"] or sweep_cfg["checkpoints"].get(
            preset
        )
    cfg["bench"]["ts"] = bench_ts(cfg)
    typed = merge(OmegaConf.structured(SweepCfg), cfg, f"grid point {label or '-'}")
    cfg = {k: v for k, v in OmegaConf.to_container(typed).items() if k in cfg}
    check_trial(cfg, train)
    if train:
        settle_base(cfg)
    if not train:
        _check_fixed_by_checkpoint(cfg, "grid params" if point else "", fixed)
        cfg["train"] = {"enabled": False}
    return cfg


def _stamp(path: Path) -> tuple:
    """A file as a cache key: its path, size and modification time (a changed file is a miss)."""
    try:
        st = Path(path).stat()
    except OSError:
        return (str(path), None, None)
    return (str(path), st.st_size, st.st_mtime_ns)


def _verified_sha(weights: Path, manifest: Path) -> str:
    """The weights' verified sha256, hashed once per file version for every trial of a plan."""
    return _verified_sha_of(_stamp(weights), _stamp(manifest))


@functools.lru_cache(maxsize=16)
def _verified_sha_of(weights: tuple, manifest: tuple) -> str:
    from hrsam import pretrained

    preset = Path(weights[0]).name.removesuffix(pretrained.SUFFIX)
    return pretrained.verify(preset, Path(weights[0]).parent)["sha256"]


@functools.lru_cache(maxsize=16)
def _checkpoint_config(stamp: tuple) -> dict | None:
    """The architecture our checkpoint records (None: an official file), read once per file
    version for every point of a plan; `CheckpointError` for an unreadable one."""
    from hrsam.models.checkpoint import FORMAT, read_state

    state = read_state(stamp[0])
    return dict(state["config"]) if state.get("format") == FORMAT else None


def _check_fixed_by_checkpoint(cfg: dict, point_origin: str, fixed: set[str]) -> None:
    """An evaluated checkpoint of ours fixes its architecture: a model key set to another value
    is a `ConfigError` naming where the value came from and the checkpoint's own."""
    from hrsam.models.checkpoint import CheckpointError

    m = cfg["model"]
    if not m["checkpoint"]:
        return
    try:
        own = _checkpoint_config(_stamp(m["checkpoint"]))
    except CheckpointError:
        return  # check_checkpoints reports an unreadable file in its own words
    if own is None:
        return  # an official file: its architecture is the preset's
    for key in ARCH_KEYS:
        value = m[key]
        mine = own.get(key)
        if value is None or mine is None or json.dumps(value) == json.dumps(mine):
            continue
        origin = "command line" if f"model.{key}" in fixed else point_origin or "the config"
        raise ConfigError(
            f"model.{key}={fmt(value)} ({origin}) differs from the checkpoint's {key}={fmt(mine)}:"
            f" {m['checkpoint']} was trained with it; drop the key to evaluate the checkpoint as"
            " it is"
        )


def check_checkpoints(sweep: Sweep) -> None:
    """Opens every checkpoint the trials evaluate, once, here, before any job: readable, and
    fitting its preset (with the trial's model keys). A bad file is one complete line."""
    from hrsam.models import CheckpointError, load_model

    seen = set()
    for t in sweep.trials:
        m = t.config["model"]
        overrides = model_overrides(m)
        key = (m["preset"], m["checkpoint"], json.dumps(overrides, sort_keys=True))
        if t.train_key is not None or not m["checkpoint"] or key in seen:
            continue
        seen.add(key)
        try:
            load_model(m["preset"], m["checkpoint"], **overrides)
        except (CheckpointError, ValueError) as e:
            raise ConfigError(f"model.checkpoint={m['checkpoint']!r}: {one_line(e)}") from None
