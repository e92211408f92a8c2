"""The sweep's configuration: one typed schema, a config tree merged once, grids expanded to trials.

``conf/defaults.yaml`` is the embedded default; ``profile=paper`` merges
``conf/profile/paper.yaml``; ``executor=<name>`` merges ``conf/executor/<name>.yaml``;
``grid=<name>`` reads ``conf/grid/<name>.yaml`` (its ``paper:`` section replaces the rest under
``profile=paper``); ``key=value`` overrides come
last and fix that key, dropping its axis from the grid (Hydra's rule). Plain OmegaConf merged onto
a structured schema (as DINOv2 does), so an unknown key or a wrong type fails at once.

A grid file holds ``description``, ``train`` (trials train a model, cached by the hash of what
changes the weights, or evaluate a given checkpoint), ``params`` (axes whose cartesian product are
the trials), ``include`` (extra points merged onto the product's base) and ``set`` (keys the grid
fixes for all its trials, e.g. the training ts of ``paper_main``; the command line wins). Every
trial's config is resolved (preset values filled in) and hashed: ``trial_id`` names its folder
and MLflow run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from hrsam.data import DataConfig
from hrsam.interactive.evaluate import EvalConfig
from hrsam.precision import PRECISIONS
from hrsam.train.loop import TrainConfig

CONF = Path(__file__).parent / "conf"
# keys that do not change a trial's result: left out of its hash
NOT_HASHED = ("experiment", "executor", "out", "mlflow", "report", "checkpoints")
EXECUTORS = ("debug", "local", "slurm")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A bad sweep configuration: printed as one line, exit code 2, before anything runs."""


@dataclass
class ModelCfg:
    preset: str = "hrsam_tiny"
    attention: str | None = None
    kernel: str | None = None
    window_size: int | None = None
    scan: str | None = None
    cycle_repeats: int | None = None
    anchor_sizes: list[int] | None = None
    checkpoint: str | None = None


def _schema_of(cls: type, name: str, extra: list[tuple] = (), exclude: tuple = ()) -> type:
    """A structured-config dataclass with ``cls``'s fields and defaults (the library's dataclass
    is the schema; its defaults are defined there only), plus ``extra`` sweep-only fields."""
    hints = typing.get_type_hints(cls)
    own = [
        (f.name, hints[f.name], field(default=f.default))
        for f in dataclasses.fields(cls)
        if f.name not in exclude
    ]
    return dataclasses.make_dataclass(name, [*extra, *own])


# train.*: every TrainConfig field (its seed is the trial's ``seed``), plus whether the grid trains
# base_steps > 0: every trial finetunes ``steps`` (at ``lr``, ``ts``) from one base training of
# ``base_steps`` at ``base_lr`` and ``base_ts`` (0: ``lr``, ``ts``; the preset's own architecture,
# the same recipe otherwise), trained once and cached across sweeps
TrainCfg = _schema_of(
    TrainConfig,
    "TrainCfg",
    [
        ("enabled", bool, field(default=True)),
        ("base_steps", int, field(default=0)),
        ("base_lr", float, field(default=0.0)),
        ("base_ts", int, field(default=0)),
    ],
    exclude=("seed",),
)
# train.* keys not in TrainConfig
SWEEP_TRAIN_KEYS = ("enabled", "base_steps", "base_lr", "base_ts")
# data.*: DataConfig, plus a root per dataset name for grids over data.name
DataCfg = _schema_of(
    DataConfig, "DataCfg", [("roots", dict[str, str], field(default_factory=dict))]
)
EvalCfg = _schema_of(EvalConfig, "EvalCfg")


@dataclass
class BenchCfg:
    enabled: bool = True
    ts: int = 0
    reps: int = 5
    sat_points: int = 16  # SAT: a sat_points x sat_points grid of single-click prompts


@dataclass
class SlurmCfg:
    preset: str | None = None  # a file in slurm/presets/, merged into this section
    partition: str | None = None
    array_parallelism: int = 16
    use_srun: bool = True
    max_num_timeout: int = 3
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutorCfg:
    name: str = "local"
    parallel: int = 1  # trials running at once (local: 1 keeps timings fair)
    timeout_min: int = 60  # per trial; the sweep's deadline is this plus a grace period
    cpus_per_task: int = 2
    gpus_per_node: int = 0
    mem_gb: int = 8
    slurm: SlurmCfg = field(default_factory=SlurmCfg)


@dataclass
class MlflowCfg:
    tracking_uri: str = "sqlite:///mlflow.db"


@dataclass
class ReportCfg:
    enabled: bool = True  # build the report when the sweep ends (``report=false`` for short)
    # the row paired comparisons are made against: ``window_size=8``, ``preset=sam_tiny`` or a
    # bare value; null: the grid's first point (`baseline_point`)
    baseline: str | None = None


@dataclass
class SweepCfg:
    grid: str = MISSING
    profile: str = "default"
    experiment: str = ""
    seed: int = 42
    repeats: int = 1
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16: benchmark and evaluation (autocast)
    tf32: bool = False  # TF32 float32 matmuls on CUDA (a recorded choice)
    model: ModelCfg = field(default_factory=ModelCfg)
    checkpoints: dict[str, str] = field(default_factory=dict)
    train: TrainCfg = field(default_factory=TrainCfg)
    data: DataCfg = field(default_factory=DataCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    bench: BenchCfg = field(default_factory=BenchCfg)
    executor: ExecutorCfg = field(default_factory=ExecutorCfg)
    out: str = "outputs/sweeps"
    mlflow: MlflowCfg = field(default_factory=MlflowCfg)
    report: ReportCfg = field(default_factory=ReportCfg)


@dataclass(frozen=True)
class Trial:
    """One point of a grid: its resolved config (plain dict), id, and a short label."""

    trial_id: str
    config: dict
    label: str
    train_key: str | None  # hash of what changes the weights; None when evaluating a checkpoint


@dataclass(frozen=True)
class Sweep:
    grid: str
    description: str
    config: dict  # the sweep-level config (executor, mlflow, out, ...)
    trials: list[Trial]
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


def list_grids() -> list[str]:
    return sorted(p.stem for p in (CONF / "grid").glob("*.yaml"))


def list_profiles() -> list[str]:
    return ["default", *sorted(p.stem for p in (CONF / "profile").glob("*.yaml"))]


def short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def schema_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items() if isinstance(node, dict) else []:
        keys.append(prefix + k)
        if isinstance(v, dict) and v:
            keys.extend(schema_keys(v, f"{prefix}{k}."))
    return keys


def _one_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def _check_key(key: str, schema: dict) -> None:
    node = schema
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if i > 0 and parts[i - 1] in ("checkpoints", "roots", "additional"):
            return  # free-form mappings
        valid = schema_keys(schema)
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
        raise ConfigError(f"unknown key {key!r}{hint}")


def _load_yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}


def _merge(base: DictConfig, overrides: dict | DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, overrides)
    except ConfigKeyError as e:
        raise ConfigError(f"{source}: unknown key {getattr(e, 'full_key', '') or e}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "")
        raise ConfigError(f"{source}: bad value for {key}: {_one_line(e)}") from None


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` arguments -> (overrides as strings, flags)."""
    overrides, flags = {}, []
    for arg in argv:
        if arg.startswith("--"):
            flags.append(arg)
        elif "=" in arg:
            key, value = arg.split("=", 1)
            overrides[key] = value
        else:
            raise ConfigError(f"argument {arg!r} is not key=value (e.g. grid=window_size)")
    return overrides, flags


def compose(overrides: dict[str, str]) -> tuple[dict, dict]:
    """Merges defaults, profile, executor and CLI overrides onto the schema.

    Returns:
        (the composed sweep config as a plain dict, the grid file's content).
    """
    overrides = dict(overrides)
    if "report" in overrides:  # report=false: short for report.enabled=false
        overrides["report.enabled"] = overrides.pop("report")
    grid = overrides.pop("grid", None)
    if not grid:
        raise ConfigError(f"grid=<name> is required; grids: {', '.join(list_grids())}")
    if grid not in list_grids():
        raise ConfigError(f"unknown grid {grid!r}; grids: {', '.join(list_grids())}")
    profile = overrides.pop("profile", "default")
    if profile not in list_profiles():
        raise ConfigError(f"unknown profile {profile!r}; profiles: {', '.join(list_profiles())}")
    schema = OmegaConf.structured(SweepCfg)
    schema_dict = OmegaConf.to_container(schema)
    for key in overrides:
        _check_key(key, schema_dict)
    # key=a,b on the command line is an axis (Hydra's sweep syntax); [a,b] stays one list value
    axes = {
        k: [yaml.safe_load(x) for x in v.split(",")]
        for k, v in overrides.items()
        if "," in v and not v.lstrip().startswith(("[", "{")) and not k.startswith("report.")
    }
    for key in axes:
        overrides.pop(key)
    cfg = _merge(schema, _load_yaml(CONF / "defaults.yaml"), "conf/defaults.yaml")
    if profile != "default":
        cfg = _merge(cfg, _load_yaml(CONF / "profile" / f"{profile}.yaml"), f"profile {profile}")
    executor = overrides.pop("executor", None) or overrides.pop("executor.name", None)
    if executor is not None:
        if executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
        cfg = _merge(cfg, _load_yaml(CONF / "executor" / f"{executor}.yaml"), "executor")
    dotlist = [f"{k}={v}" for k, v in overrides.items()]
    cfg = _merge(cfg, OmegaConf.from_dotlist(dotlist), "command line")
    cfg.grid, cfg.profile = grid, profile
    out = OmegaConf.to_container(cfg, resolve=True)
    preset = out["executor"]["slurm"]["preset"]
    if preset:
        cli = {k.split(".", 2)[2] for k in overrides if k.startswith("executor.slurm.")}
        out["executor"]["slurm"] = _slurm_preset(preset, out["executor"]["slurm"], cli)
    grid_spec = _load_yaml(CONF / "grid" / f"{grid}.yaml")
    if profile != "default" and profile in grid_spec:  # the profile's points replace the rest
        grid_spec = {
            **grid_spec,
            "params": None,
            "include": None,
            "set": None,
            **grid_spec[profile],
        }
    for key in [
        *(grid_spec.get("params") or {}),
        *_include_keys(grid_spec),
        *(grid_spec.get("set") or {}),
    ]:
        _check_key(key, schema_dict)
    _check(out)
    return out, {**grid_spec, "fixed": sorted(overrides), "axes": axes}


def _include_keys(grid_spec: dict) -> list[str]:
    return [k for point in grid_spec.get("include") or [] for k in point]


def _slurm_preset(name: str, section: dict, cli: set[str] = frozenset()) -> dict:
    folder = Path(__file__).resolve().parent.parent / "slurm" / "presets"
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    if name not in names:
        raise ConfigError(f"unknown SLURM preset {name!r}; presets: {', '.join(names)}")
    merged = OmegaConf.merge(OmegaConf.structured(SlurmCfg), _load_yaml(folder / f"{name}.yaml"))
    base = OmegaConf.to_container(merged)
    # keys set on the command line (``cli``) win over the preset, even when set to the schema
    # default (use_srun=true over the local preset's false); other keys keep a value that an
    # executor file or profile moved away from the schema default, else take the preset's
    default = OmegaConf.to_container(OmegaConf.structured(SlurmCfg))
    return {k: (v if k in cli or v != default[k] else base[k]) for k, v in section.items()}


def get(d: dict, key: str):
    """``get(cfg, "model.window_size")``."""
    for part in key.split("."):
        d = d[part]
    return d


def _set(d: dict, key: str, value) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def _check(cfg: dict) -> None:
    """Sweep-level checks (trial-level ones run per trial in `expand`)."""
    ex = cfg["executor"]
    if ex["name"] not in EXECUTORS:
        raise ConfigError(f"executor.name={ex['name']!r}; valid: {', '.join(EXECUTORS)}")
    for key in ("parallel", "timeout_min", "cpus_per_task"):
        if ex[key] < 1:
            raise ConfigError(f"executor.{key}={ex[key]} must be >= 1")
    if cfg["device"] not in DEVICES:
        raise ConfigError(f"device={cfg['device']!r}; valid: {', '.join(DEVICES)}")
    if cfg["precision"] not in PRECISIONS:
        raise ConfigError(f"precision={cfg['precision']!r}; valid: {', '.join(PRECISIONS)}")
    if cfg["repeats"] < 1:
        raise ConfigError(f"repeats={cfg['repeats']} must be >= 1")
    uri = cfg["mlflow"]["tracking_uri"]
    if not uri.startswith(("sqlite:///", "http://", "https://", "databricks")):
        raise ConfigError(
            f"mlflow.tracking_uri={uri!r}: use sqlite:///<path> or http://host:port "
            "(MLflow's file store is deprecated and refuses to start)"
        )


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
        msg = _one_line(e)
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
    if data["name"] != "synthetic" and not Path(data["root"]).is_dir():
        raise ConfigError(
            f"data.root={data['root']!r} ({data['name']}) is not a folder; point data.root "
            f"(or data.roots.{data['name']}) at the dataset"
        )
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
    msg = _one_line(e)
    head = msg.split("=", 1)[0]
    return f"{section}.{msg}" if head.isidentifier() else f"{section}: {msg}"


def train_config(cfg: dict) -> TrainConfig:
    """The trial's `TrainConfig`: every ``train.*`` key, seeded with the trial's seed."""
    fields = {k: v for k, v in cfg["train"].items() if k not in SWEEP_TRAIN_KEYS}
    return TrainConfig(**fields, seed=cfg["seed"])


def base_config(cfg: dict) -> tuple[str, TrainConfig] | None:
    """The shared base training of a trial as (its cache key, its `TrainConfig`): the trial's
    recipe for ``train.base_steps`` steps on the preset's own architecture; None without one.
    The key holds what changes the base's weights, so sweeps of every grid share it."""
    steps = cfg["train"].get("base_steps", 0)
    if not steps:
        return None
    tc = train_config(cfg)
    t = cfg["train"]
    tc = dataclasses.replace(
        tc, steps=steps, lr=t.get("base_lr") or tc.lr, ts=t.get("base_ts") or tc.ts
    )
    spec = {
        "preset": cfg["model"]["preset"],
        "train": dataclasses.asdict(tc),
        "data": _data_key(cfg),
    }
    return short_hash(spec), tc


def data_config(cfg: dict) -> DataConfig:
    return DataConfig(**{k: v for k, v in cfg["data"].items() if k != "roots"})


def eval_config(cfg: dict) -> EvalConfig:
    return EvalConfig(**cfg["eval"])


ARCH_KEYS = ("attention", "window_size", "cycle_repeats", "anchor_sizes")  # change the weights
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
    """The grid's trials AS REQUESTED (``auto`` and preset defaults stay unresolved: the job
    resolves them on its own device), each checked. Raises `ConfigError` on the first bad one."""
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
    points = points or [{}]
    trials, seen = [], set()
    for point in points:
        for r in range(sweep_cfg["repeats"]):
            cfg = copy.deepcopy({k: v for k, v in sweep_cfg.items() if k not in NOT_HASHED})
            cfg["train"]["enabled"] = train
            for key, value in (grid_spec.get("set") or {}).items():
                if key not in fixed:  # the command line wins over the grid
                    _set(cfg, key, value)
            for key, value in point.items():
                _set(cfg, key, value)
            cfg["seed"] = sweep_cfg["seed"] + r
            if cfg["data"]["name"] in cfg["data"]["roots"]:
                cfg["data"]["root"] = cfg["data"]["roots"][cfg["data"]["name"]]
            if not train:
                ckpt = cfg["model"]["checkpoint"] or sweep_cfg["checkpoints"].get(
                    cfg["model"]["preset"]
                )
                cfg["model"]["checkpoint"] = ckpt
            if cfg["bench"]["ts"] == 0:
                cfg["bench"]["ts"] = cfg["eval"]["ts"]
            label = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in point.items())
            typed = _merge(OmegaConf.structured(SweepCfg), cfg, f"grid point {label or '-'}")
            cfg = {k: v for k, v in OmegaConf.to_container(typed).items() if k in cfg}
            check_trial(cfg, train)
            if not train:
                cfg["train"] = {"enabled": False}
            trial_id = short_hash(_hash_view(cfg))  # as requested: the same on every host
            if trial_id in seen:
                continue
            seen.add(trial_id)
            if sweep_cfg["repeats"] > 1:
                label = f"{label}, seed={cfg['seed']}" if label else f"seed={cfg['seed']}"
            trials.append(
                Trial(trial_id, cfg, label or "default", training_key(cfg) if train else None)
            )
    keys = sorted({k for p in points for k in p})
    if sweep_cfg["report"]["baseline"]:  # a bad baseline fails here, before anything runs
        grid_points = list(dict.fromkeys(tuple(get(t.config, k) for k in keys) for t in trials))
        baseline_point(sweep_cfg["report"]["baseline"], keys, grid_points)
    if sweep_cfg["repeats"] > 1:
        keys.append("seed")
    return Sweep(sweep_cfg["grid"], grid_spec.get("description", ""), sweep_cfg, trials, keys)


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
            raise ConfigError(f"model.checkpoint={m['checkpoint']!r}: {_one_line(e)}") from None


def fmt(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"preset": ...}} -> {"model.preset": ...} (MLflow params, table columns)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _norm(v) -> str:
    return "".join(fmt(v).replace("[", "").replace("]", "").split())


def baseline_point(spec: str | None, keys: list[str], points: list[tuple]) -> dict[str, Any]:
    """The baseline of paired comparisons as ``{key: value}`` for some of ``keys``: ``spec`` is
    ``key=value[,key=value]`` (a key by its full name or its leaf, ``window_size=8``) or a bare
    value of one key (``8``, ``sam_tiny``); None takes the grid's first point on its first key.
    Every other key is compared within its own value (the baseline of ``hrsam_tiny`` at ts 1024
    is ``sam_tiny`` at ts 1024). Raises `ConfigError` naming the points when ``spec`` names none.
    """
    if not keys or not points:
        if spec:
            raise ConfigError(f"report.baseline={spec!r}: the grid has one point, no baseline")
        return {}
    values = {k: [p[i] for p in points] for i, k in enumerate(keys)}
    if not spec:
        return {keys[0]: values[keys[0]][0]}
    leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
    choices = "; ".join(
        ", ".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}" for k, v in zip(keys, p, strict=True))
        for p in points
    )
    bad = f"report.baseline={spec!r} names no point of the grid; points: {choices}"
    out: dict[str, Any] = {}
    for part in re.split(r",(?=[\w.]+=)", spec):
        key, sep, value = part.partition("=")
        if sep:
            key = leaf.get(key.strip(), key.strip())
            if key not in values:
                raise ConfigError(bad)
            found = [v for v in values[key] if _norm(v) == _norm(value)]
        else:
            found, value = [], key
            for k in keys:
                hits = [v for v in values[k] if _norm(v) == _norm(value)]
                if hits:
                    found, key = (hits if not found else []), k
        if not found:
            raise ConfigError(bad)
        out[key] = found[0]
    if not any(all(p[keys.index(k)] == v for k, v in out.items()) for p in points):
        raise ConfigError(bad)
    return out
