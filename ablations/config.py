"""The sweep's configuration: one typed schema, a config tree merged once, grids expanded to trials.

``ablations/conf/defaults.yaml`` is the embedded default; ``profile=paper`` merges
``ablations/conf/profile/paper.yaml``; ``executor=<name>`` merges ``conf/executor/<name>.yaml``;
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

import dataclasses
import difflib
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ablations.record import flatten  # noqa: F401 (the sweep's name for it)
from hrsam.data import DataConfig
from hrsam.interactive.evaluate import EvalConfig
from hrsam.precision import PRECISIONS
from hrsam.train.loop import TrainConfig

CONF = Path(__file__).parent / "conf"
# keys that do not change a trial's result: left out of its hash
# sweep-level keys, not a trial's: left out of its requested tree and its id (``repeats`` too: a
# replicate is its seed, so seed 42's trial is the same one with repeats=1 or repeats=3)
NOT_HASHED = ("experiment", "executor", "out", "mlflow", "report", "checkpoints", "repeats")
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
    detail: int | None = None  # the decoder's detail path channels (0: SAM's decoder)
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
# and where its trials start:
# base=pretrained: every trial finetunes ``steps`` from the preset's committed pretrained weights
# (hrsam/pretrained, made by `python -m ablations.pretrain`); ``base_sha256`` is filled in by the
# plan with their sha256, so trial ids and training keys change when the weights do.
# base=scratch and base_steps > 0: every trial finetunes ``steps`` (at ``lr``, ``ts``) from one base
# training of ``base_steps`` at ``base_lr`` and ``base_ts`` (0: ``lr``, ``ts``; the preset's own
# architecture, the same recipe otherwise), trained once and cached across sweeps; base_steps 0:
# from the initialization.
BASES = ("scratch", "pretrained")
TrainCfg = _schema_of(
    TrainConfig,
    "TrainCfg",
    [
        ("enabled", bool, field(default=True)),
        ("base", str, field(default="scratch")),
        ("base_sha256", str, field(default="")),
        ("base_steps", int, field(default=0)),
        ("base_lr", float, field(default=0.0)),
        ("base_ts", int, field(default=0)),
    ],
    exclude=("seed",),
)
# train.* keys not in TrainConfig
SWEEP_TRAIN_KEYS = ("enabled", "base", "base_sha256", "base_steps", "base_lr", "base_ts")
# data.*: DataConfig, plus a root per dataset name for grids over data.name
DataCfg = _schema_of(
    DataConfig, "DataCfg", [("roots", dict[str, str], field(default_factory=dict))]
)
EvalCfg = _schema_of(EvalConfig, "EvalCfg")


@dataclass
class BenchCfg:
    enabled: bool = True
    ts: int = 0  # 0: the evaluation's ts (settled by the plan: spec.bench_ts)
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
    # ``module:function`` that builds the report (named here, imported by path when the sweep
    # ends: the harness never imports the reports package, and no install step is needed)
    builder: str = "reports.build:build"


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


def list_grids() -> list[str]:
    return sorted(p.stem for p in (CONF / "grid").glob("*.yaml"))


def grid_path(grid: str) -> tuple[str, Path]:
    """(name, file) of ``grid=``: a grid of ``conf/grid/`` by name, or a path to your own grid
    file (``*.yaml``; its stem names the experiment)."""
    if grid in list_grids():
        return grid, CONF / "grid" / f"{grid}.yaml"
    if grid.endswith((".yaml", ".yml")) and Path(grid).is_file():
        return Path(grid).stem, Path(grid)
    raise ConfigError(
        f"unknown grid {grid!r}; grids: {', '.join(list_grids())}, or the path of a grid file "
        "(*.yaml)"
    )


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


def one_line(e: Exception) -> str:
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
    """A config file as a dict; a file YAML cannot parse (or that is not a mapping) is one line
    naming the file and the place."""
    try:
        out = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or one_line(e)
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {one_line(e)}") from None
    if not isinstance(out, dict):
        raise ConfigError(f"{path}: must be a mapping of keys, not a {type(out).__name__}")
    return out


def merge(base: DictConfig, overrides: dict | DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, overrides)
    except ConfigKeyError as e:
        raise ConfigError(f"{source}: unknown key {getattr(e, 'full_key', '') or e}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "")
        raise ConfigError(f"{source}: bad value for {key}: {one_line(e)}") from None


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` arguments -> (overrides as strings, flags)."""
    overrides, flags = {}, []
    for arg in argv:
        if arg.startswith("--"):
            flags.append(arg)
        elif "=" in arg:
            key, value = arg.split("=", 1)
            if key in overrides and overrides[key] != value:
                raise ConfigError(
                    f"{key} is given twice ({key}={overrides[key]} and {key}={value}); "
                    f"give it once (an axis: {key}={overrides[key]},{value})"
                )
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
    grid, grid_file = grid_path(grid)
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
    cfg = merge(schema, _load_yaml(CONF / "defaults.yaml"), "conf/defaults.yaml")
    if profile != "default":
        cfg = merge(cfg, _load_yaml(CONF / "profile" / f"{profile}.yaml"), f"profile {profile}")
    executor = overrides.pop("executor", None) or overrides.pop("executor.name", None)
    if executor is not None:
        if executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
        cfg = merge(cfg, _load_yaml(CONF / "executor" / f"{executor}.yaml"), "executor")
    dotlist = [f"{k}={v}" for k, v in overrides.items()]
    cfg = merge(cfg, OmegaConf.from_dotlist(dotlist), "command line")
    cfg.grid, cfg.profile = grid, profile
    out = OmegaConf.to_container(cfg, resolve=True)
    preset = out["executor"]["slurm"]["preset"]
    if preset:
        cli = {k.split(".", 2)[2] for k in overrides if k.startswith("executor.slurm.")}
        out["executor"]["slurm"] = _slurm_preset(preset, out["executor"]["slurm"], cli)
    grid_spec = _load_yaml(grid_file)
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


def fmt(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


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
