"""One trial's path, end to end in-process (executor=debug, micro scale): resolved in the job and
recorded next to the request, weights as checkpoint paths (ours, official HRSAM, official SAM),
every training option reachable from a sweep, and each default defined in one place."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
import yaml

from ablations import config as C
from ablations import spec as S
from ablations import sweep
from ablations.record import TrialRecord
from tests.helpers import DEBUG_MICRO as MICRO
from tests.helpers import mlflow_params, records, with_keys


@pytest.mark.slow
def test_scan_auto_is_resolved_in_the_job_and_recorded_as_run(tmp_path, monkeypatch):
    """Planned with scan=auto on a CPU planner, run where another backend is the default: the
    record says the backend the trial ran with, next to what was asked."""
    from hrsam.ssm import scan as scan_backends

    monkeypatch.chdir(tmp_path)
    args = ["grid=window_size", "model.window_size=4", *MICRO]
    planned = S.expand(*C.compose(C.parse_args(args)[0]))
    [trial] = planned.trials
    assert trial.config["model"]["scan"] is None and trial.config["device"] == "auto"
    # the job's machine: its default backend is another one than this planner's ("cpu")
    monkeypatch.setattr(scan_backends, "default_scan", lambda device: "ref")
    assert sweep.main(args) == 0
    [record] = records(tmp_path, "window_size")
    assert record.ok and record.trial_id == trial.trial_id
    assert record.params["model.scan"] is None and record.resolved["model.scan"] == "ref"
    assert record.params["device"] == "auto" and record.resolved["device"] == "cpu"
    assert record.resolved["model.kernel"] == "sdpa" and record.params["model.kernel"] is None
    folder = tmp_path / "outputs/sweeps/window_size/trials" / record.trial_id
    assert yaml.safe_load((folder / "config_requested.yaml").read_text())["model"]["scan"] is None
    assert yaml.safe_load((folder / "config_resolved.yaml").read_text())["model"]["scan"] == "ref"
    [run] = mlflow_params(tmp_path, "window_size").to_dict("records")
    assert run["params.model.scan"] == "ref" and run["params.requested.model.scan"] == "None"


def _official_hrsam_state(state: dict) -> dict:
    """Our keys -> the released HRSAM checkpoint's (mmseg) keys: the inverse of the loader's map."""
    from hrsam.models.checkpoint import _OFFICIAL_HRSAM

    out = {}
    for key, value in state.items():
        for old, new in reversed(_OFFICIAL_HRSAM):  # ours -> official, shortest prefix last
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = value
    return {"state_dict": out}


@pytest.mark.slow
def test_evaluate_only_sweeps_take_our_official_hrsam_and_official_sam_checkpoints(
    tmp_path, monkeypatch
):
    from hrsam.models import build_model, load_model
    from hrsam.models.checkpoint import remap_official_hrsam
    from hrsam.train.__main__ import main as train_main

    monkeypatch.chdir(tmp_path)
    data = ["data.size=64", "data.n_train=2", "data.n_val=1"]
    argv = ["preset=hrsam_tiny", "steps=2", "ts=64", "device=cpu", "out=outputs/train/m", *data]
    assert train_main(argv) == 0
    ours = tmp_path / "outputs/train/m/last.pt"
    # the same weights as a released HRSAM file (mmseg key names) and a random official SAM file
    trained = load_model("hrsam_tiny", ours)
    official = tmp_path / "hrsam_official.pth"
    torch.save(_official_hrsam_state(trained.state_dict()), official)
    assert remap_official_hrsam(torch.load(official)).keys() == trained.state_dict().keys()
    torch.manual_seed(0)
    sam = tmp_path / "sam_official.pth"
    torch.save(build_model("sam_tiny").state_dict(), sam)

    for i, (preset, ckpt) in enumerate(
        [("hrsam_tiny", ours), ("hrsam_tiny", official), ("sam_tiny", sam)]
    ):
        args = ["grid=resolution", "train.enabled=false", f"model.preset={preset}"]
        args += [f"model.checkpoint={ckpt}", f"experiment=e{i}", *MICRO]
        assert sweep.main(args) == 0, ckpt
    (a,), (b,), (c,) = (records(tmp_path, f"e{i}") for i in range(3))
    assert a.ok and b.ok and c.ok
    assert a.provenance["weights"] == str(ours) and b.provenance["weights"] == str(official)
    assert a.resolved["model.scan"] == "cpu" and c.resolved["model.scan"] is None
    assert a.resolved["model.window_size"] == b.resolved["model.window_size"]
    # our file and the official-format file hold the same weights: the same evaluation
    assert a.miou_curve == b.miou_curve and a.metrics["noc90"] == b.metrics["noc90"]


@pytest.mark.slow
def test_every_training_option_reaches_the_loop_and_the_initial_weights_are_seeded(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = ["grid=window_size", "model.window_size=4", "train.gamma=0.8", "train.loss_rounds=all"]
    assert sweep.main([*args, "train.loss=nfl", "train.batch_size=2", *MICRO]) == 0
    [ckpt] = (tmp_path / "outputs/sweeps/window_size/cache/train").glob("*/model.pt")
    training = torch.load(ckpt, weights_only=True)["meta"]["training"]
    assert training["gamma"] == 0.8 and training["loss_rounds"] == "all"
    assert training["loss"] == "nfl" and training["batch_size"] == 2
    assert training["seed"] == 42 and training["steps"] == 2


def test_every_sweep_key_has_its_default_in_one_place():
    """The schema's defaults are the library dataclasses'; defaults.yaml only changes some (a
    line that repeats the schema's value would be a second definition); the library CLIs take
    theirs from the same dataclasses."""
    from hrsam import cli
    from hrsam import evaluate as evaluate_cli
    from hrsam.data import DataConfig
    from hrsam.interactive.evaluate import EvalConfig
    from hrsam.train import __main__ as train_cli
    from hrsam.train.loop import TrainConfig

    schema = C.flatten(C.OmegaConf.to_container(C.OmegaConf.structured(C.SweepCfg)))
    for section, lib, own in (
        ("train", TrainConfig, set(C.SWEEP_TRAIN_KEYS)),
        ("data", DataConfig, {"roots"}),
        ("eval", EvalConfig, set()),
    ):
        keys = {k.split(".", 1)[1] for k in schema if k.startswith(f"{section}.")}
        lib_fields = {f.name: f.default for f in dataclasses.fields(lib)}
        assert keys - own == set(lib_fields) - {"seed"}, section  # seed: the trial's
        for name in keys - own:
            assert schema[f"{section}.{name}"] == lib_fields[name], (section, name)
    yaml_leaves = C.flatten(yaml.safe_load((C.CONF / "defaults.yaml").read_text()))
    assert set(yaml_leaves) <= set(schema)
    assert {k: v for k, v in yaml_leaves.items() if schema[k] == v} == {}
    for key, field_name in train_cli.TRAIN_FIELDS.items():
        assert train_cli.DEFAULTS[key] == getattr(TrainConfig, field_name), key
    assert {k: evaluate_cli.DEFAULTS[k] for k in ("protocol", "ts", "max_clicks")} == (
        dataclasses.asdict(EvalConfig())
    )
    assert cli.data_defaults() == {
        f"data.{k}": v for k, v in dataclasses.asdict(DataConfig()).items()
    }
    # and the composed sweep config is exactly schema + defaults.yaml
    cfg, _ = C.compose({"grid": "window_size"})
    composed = C.flatten(cfg)
    for key, value in schema.items():
        if key not in ("grid", "profile"):
            assert composed[key] == yaml_leaves.get(key, value), key
    json.dumps(cfg)  # plain data all the way down


def test_the_synthetic_generator_defaults_and_the_bench_ts_rule_live_in_one_place(
    tmp_path, monkeypatch
):
    """The generator's defaults are `hrsam.data.synthetic.Spec`'s: DataConfig, generate() and the
    dataset take them from there (a default changed there changes all three), and a trial's
    benchmark ts is settled once, by the plan, from the evaluation's ts where it is 0."""
    from hrsam.data import DataConfig, synthetic

    spec = dataclasses.asdict(synthetic.Spec())
    config = dataclasses.asdict(DataConfig())
    assert {k: config[k] for k in spec if k in config} == {
        k: v for k, v in spec.items() if k in config
    }
    monkeypatch.setattr(synthetic.Spec.__init__, "__defaults__",
                        (1, 1, 64, 0, 1.0, 1.0, 3, "2"))  # fmt: skip
    folder = synthetic.generate(tmp_path)
    assert folder.name == "v3_64px_1+1_s0_objects2"
    recorded = json.loads((folder / synthetic.MANIFEST).read_text())["spec"]
    assert recorded == {"version": 3, "n_train": 1, "n_val": 1, "size": 64, "seed": 0,
                        "objects": "2"}  # fmt: skip
    assert len(synthetic.SyntheticDataset(tmp_path, "val")) == 2  # two objects in one scene

    for bench, expected in ((0, 256), (128, 128)):
        overrides = {"grid": "window_size", "model.window_size": "4", "eval.ts": "256"}
        cfg, grid = C.compose({**overrides, "bench.ts": str(bench), "train.base": "scratch"})
        [trial] = S.expand(cfg, grid).trials
        assert trial.bench.ts == trial.config["bench"]["ts"] == expected


def test_init_from_copies_what_fits_and_names_the_rest():
    from hrsam.models import build_model
    from hrsam.models.checkpoint import init_from

    torch.manual_seed(0)
    base = build_model("hrsam_tiny", scan="ref")
    state = base.state_dict()
    other = build_model("hrsam_tiny", scan="ref", window_size=4)  # same weights, other windows
    copied, fresh = init_from(other, state)
    assert fresh == [] and copied == len(state)
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())
    no_scan = build_model("hrsam_tiny", scan="none")  # fewer tensors: the rest is ignored
    copied, fresh = init_from(no_scan, state)
    assert fresh == [] and copied == len(no_scan.state_dict()) < len(state)
    key = next(k for k, v in state.items() if v.ndim == 2 and v.shape[0] > 1)
    bad = {k: (v[:1] if k == key else v) for k, v in state.items()}
    copied, fresh = init_from(build_model("hrsam_tiny", scan="ref"), bad)
    assert fresh == [key] and copied == len(state) - 1
    # the decoder's detail path (model.detail): a finetune without it drops the base's path, one
    # with another width keeps everything else and starts the path fresh
    plain = build_model("hrsam_tiny", scan="ref", detail=0)
    copied, fresh = init_from(plain, state)
    assert fresh == [] and copied == len(plain.state_dict()) == len(state) - 8
    wider = build_model("hrsam_tiny", scan="ref", detail=8)
    copied, fresh = init_from(wider, state)
    assert (
        fresh
        == [f"detail_encoder.conv{i}.{k}" for i in (1, 2) for k in ("bias", "weight")]
        + [
            "mask_decoder.detail_fuse.conv1.weight"  # its input widens; its bias and conv2 fit
        ]
        and copied == len(state) - 5
    )


def test_model_detail_is_a_sweep_axis_that_changes_the_training_key():
    """``model.detail=0,16``: two trials, each resolved with its path, with their own training
    keys (the path changes the weights)."""
    args = ["grid=window_size", "model.window_size=8", "model.detail=0,16"]
    trials = S.expand(*C.compose(C.parse_args(args)[0])).trials
    assert sorted(t.config["model"]["detail"] for t in trials) == [0, 16]
    assert len({t.train_key for t in trials}) == 2
    assert sorted(t.label for t in trials) == ["detail=0", "detail=16"]


@pytest.mark.slow
def test_shared_base_training_is_trained_once_and_finetuned_per_trial(tmp_path, monkeypatch):
    """train.base_steps: one base for every trial and every sweep under the same out, each trial
    finetunes from it, and the record says which base it came from."""
    monkeypatch.chdir(tmp_path)
    # after MICRO: the last value of a key wins; the base trains at its own (smaller) ts

    micro = with_keys(MICRO, "train.base_steps=3", "train.base_ts=32")
    assert sweep.main(["grid=window_size", "model.window_size=4,8", *micro]) == 0
    bases = list((tmp_path / "outputs/sweeps/_base").iterdir())
    assert len(bases) == 1 and (bases[0] / "model.pt").exists()
    first = json.loads((bases[0] / "base.json").read_text())
    assert first["base_steps"] == 3 and first["base_key"] == bases[0].name
    rs = records(tmp_path, "window_size")
    assert len(rs) == 2 and all(r.ok for r in rs)
    assert {r.provenance["base"] for r in rs} == {bases[0].name}
    assert all(r.metrics["base_fresh_tensors"] == 0 for r in rs)  # every tensor fits
    # the finetune starts from the base: its weights moved away from the base's
    base_state = torch.load(bases[0] / "model.pt", weights_only=False)["state_dict"]
    cache = tmp_path / "outputs/sweeps/window_size/cache/train"
    tuned = [torch.load(p / "model.pt", weights_only=False)["state_dict"] for p in cache.iterdir()]
    assert len(tuned) == 2
    for state in tuned:
        gap = sum((state[k].float() - v.float()).abs().sum() for k, v in base_state.items())
        assert 0 < gap
    # another sweep (another experiment) with the same recipe reuses the base: not retrained
    stamp = (bases[0] / "model.pt").stat().st_mtime_ns
    assert sweep.main(["grid=window_size", "model.window_size=16", *micro, "experiment=w16"]) == 0
    assert (bases[0] / "model.pt").stat().st_mtime_ns == stamp
    [r16] = records(tmp_path, "w16")
    assert r16.ok and r16.provenance["base"] == bases[0].name
    # the base's key: the recipe and data, not the trial's architecture or finetune length
    key = S.base_config(planned_config(["grid=window_size", *micro]))[0]
    assert key == bases[0].name
    # (the finetune's lr too: the default recipe gives the base its own train.base_lr)
    # base_ts set: the finetune's ts is not the base's either
    for override in ("model.window_size=16", "train.steps=5", "train.lr=0.01", "train.ts=128"):
        assert (
            S.base_config(planned_config(["grid=window_size", *with_keys(micro, override)]))[0]
            == key
        )
    for override in (
        "train.base_steps=4",
        "train.weight_decay=0.1",
        "data.n_train=3",
        "train.base_lr=1",
        "train.base_ts=48",
    ):
        assert (
            S.base_config(planned_config(["grid=window_size", *with_keys(micro, override)]))[0]
            != key
        )
    # base_lr sets the base's rate, not the finetune's
    with_lr = planned_config(["grid=window_size", *with_keys(micro, "train.base_lr=0.005")])
    assert S.base_config(with_lr)[1].lr == 0.005 and S.train_config(with_lr).lr == 0.0001
    # base_ts sets the base's canvas; 0 means the finetune's
    assert S.base_config(with_lr)[1].ts == 32 and S.train_config(with_lr).ts == 64
    same = planned_config(["grid=window_size", *with_keys(micro, "train.base_ts=0")])
    assert S.base_config(same)[1].ts == 64


def planned_config(args: list[str]) -> dict:
    return S.expand(*C.compose(C.parse_args(args)[0])).trials[0].config


@pytest.mark.slow
def test_paper_main_trial_of_sam_records_the_kernel_it_ran_and_it_is_not_the_reference(
    tmp_path, monkeypatch
):
    """Issue #29: a sweep that does not set ``model.kernel`` times every family on the kernel
    ``auto`` resolves to in the job; the record, MLflow and the results table name it."""
    monkeypatch.chdir(tmp_path)
    args = ["grid=paper_main", "model.preset=sam_tiny", "eval.ts=64", *MICRO]
    assert sweep.main(args) == 0
    [record] = records(tmp_path, "paper_main")
    assert record.ok and record.params["model.kernel"] is None
    assert record.resolved["model.kernel"] == "sdpa"
    [run] = mlflow_params(tmp_path, "paper_main").to_dict("records")
    assert run["params.model.kernel"] == "sdpa"
    assert run["params.requested.model.kernel"] == "None"
    table = (tmp_path / "outputs/sweeps/paper_main/results.md").read_text()
    header, _, row = table.splitlines()[:3]
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    assert {k.strip(): v.strip() for k, v in cells.items()}["kernel"] == "sdpa"


@pytest.mark.slow
def test_a_job_resolves_its_preset_and_scan_once(tmp_path, monkeypatch):
    """The job settles the preset and the scan backend once (`ablations.resolve.resolve`);
    training, loading, the benchmark and the evaluation read what it settled (the library's own
    lookups, e.g. the environment summary's default scan, are not the trial's)."""
    from ablations import spec as S
    from ablations import tracking
    from ablations.trial import SweepRun, TrialJob, run_trial
    from hrsam.models import presets
    from hrsam.ssm import scan as scan_backends

    monkeypatch.chdir(tmp_path)
    planned = S.expand(
        *C.compose(C.parse_args(["grid=window_size", "model.window_size=4", *MICRO])[0])
    )
    [trial] = planned.trials
    sweep.prepare_data(planned)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_sweep(uri, "once", planned.sweep_id, "window_size", {}, [], tmp_path)
    folder = tmp_path / "once"
    (folder / "trials").mkdir(parents=True)
    calls = {"get_preset": 0, "default_scan": 0}

    def counted(name, fn):  # calls from the trial path (ablations.*), not the library's own
        def wrapper(*args, **kwargs):
            caller = sys._getframe(1).f_globals["__name__"]
            calls[name] += caller.startswith("ablations")
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(presets, "get_preset", counted("get_preset", presets.get_preset))
    monkeypatch.setattr(
        scan_backends, "default_scan", counted("default_scan", scan_backends.default_scan)
    )
    where = SweepRun(planned.sweep_id, "window_size", "once", str(folder), uri, parent)
    brief = run_trial(TrialJob(trial, where, cwd=str(tmp_path)))
    assert brief["status"] == "FINISHED", brief["error"]
    assert calls == {"get_preset": 1, "default_scan": 1}
    record = TrialRecord.load(folder / "trials" / trial.trial_id)
    assert record.resolved["model.scan"] == scan_backends.default_scan(torch.device("cpu"))


def test_git_dirty_counts_untracked_files_but_not_ignored_ones(tmp_path):
    import subprocess

    from ablations.provenance import git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("outputs/\n")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "run.txt").write_text("ignored")
    clean = git_state(tmp_path)
    assert clean["git_dirty"] == "False" and len(clean["git_sha"]) == 40
    (tmp_path / "new_module.py").write_text("y = 2\n")  # untracked, not ignored
    assert git_state(tmp_path)["git_dirty"] == "True"
    (tmp_path / "new_module.py").unlink()
    (tmp_path / "a.py").write_text("x = 2\n")  # modified
    assert git_state(tmp_path)["git_dirty"] == "True"


def test_a_shared_base_and_a_trial_name_the_presets_detail_path(monkeypatch):
    """``train.base=scratch``: the shared base's key holds the preset's detail path, so a base
    trained before the tiny presets had one is not reused for them; the trial id holds
    ``model.detail`` even unset (a trial recorded before the key is another model)."""
    from hrsam.models import PRESETS

    def planned():
        args = ["grid=window_size", "model.window_size=8", "train.base=scratch"]
        [trial] = S.expand(*C.compose(C.parse_args(args)[0])).trials
        return trial, S.base_config(trial.config).key

    trial, key = planned()
    assert (
        trial.config["model"]["detail"] is None and "detail" in S._hash_view(trial.config)["model"]
    )
    monkeypatch.setitem(PRESETS, "hrsam_tiny", dataclasses.replace(PRESETS["hrsam_tiny"], detail=0))
    assert planned()[1] != key
