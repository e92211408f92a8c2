"""Pretrained bases: the committed weights against their manifests, the pretraining command's
first steps reproduced from a manifest alone, the command end to end at micro scale (weights,
manifest, MLflow, resume, the learning-rate search), and sweeps that finetune from a base."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ablations import pretrain, pretrain_stages
from hrsam import pretrained
from hrsam.models import PRESETS, CheckpointError, build_model

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = pretrained.available(pretrained.FOLDER)
MICRO_RECIPE = {
    "presets": ["sam_tiny", "hrsam_tiny", "hrsampp_tiny"],
    "steps": 12,
    "threads": 1,
    "seed": 0,
    "lr": {"sam_tiny": 0.001, "hrsam_tiny": 0.001, "hrsampp_tiny": 0.001},
    "train": {"ts": 64, "loss": "bce_dice", "warmup": 4, "ckpt_every": 5},
    "data": {"n_train": 3, "n_val": 2, "size": 128},
    "search": {"lrs": [0.001, 0.003], "steps": 6, "eval_ts": 64, "eval_clicks": 5},
    "validate": {"ts": [64], "max_clicks": 3},
}


def micro_recipe(tmp: Path, **changes) -> Path:
    recipe = {**MICRO_RECIPE, **changes}
    recipe["data"] = {**recipe["data"], "root": str(tmp / "data")}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_pretrain(tmp: Path, *args: str) -> int:
    out, weights = tmp / "out", tmp / "weights"
    common = ["--out", str(out), "--export-to", str(weights), "--mlflow", f"sqlite:///{tmp}/m.db"]
    return pretrain.main([*args, "--recipe", str(tmp / "recipe.yaml"), *common])


@pytest.fixture(scope="module")
def micro_weights(tmp_path_factory) -> Path:
    """hrsam_tiny pretrained by the command on the micro recipe (12 steps at ts 64)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    micro_recipe(tmp)
    assert run_pretrain(tmp, "hrsam_tiny") == 0
    return tmp


# --- the committed weights ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", COMMITTED)
def test_committed_manifest_matches_its_file(preset):
    info = pretrained.verify(preset)
    assert info["sha256"] == pretrained.sha256(pretrained.weights_path(preset))
    assert info["command"].startswith("python -m ablations.pretrain")
    assert info["command"].endswith(preset)
    assert len(info["git_sha"]) == 40 and info["steps"] >= 1000 and info["wall_s"] > 0
    assert {"cpu", "threads", "torch"} <= set(info["machine"])
    for ts, figures in info["validation"].items():
        assert int(ts) >= 16 and figures["objects"] > 0 and 0 <= figures["miou_at_5"] <= 1
    # every later stage names its own commit and wall time; the steps add up
    for stage in info.get("stages", []):
        assert len(stage["git_sha"]) == 40 and stage["wall_s"] > 0 and stage["steps"] >= 1
    assert info["steps"] == info["train"]["steps"] + sum(s["steps"] for s in info.get("stages", []))
    model = build_model(preset)
    model.load_state_dict(pretrained.load_state(preset), strict=True)  # every key, every shape


@pytest.mark.parametrize("preset", COMMITTED)
def test_committed_base_is_what_the_committed_recipe_makes(preset):
    """The recipe and the bases agree: every stage's ts, steps, rate, warm-up, seed and the detail
    path it added, and the first stage's whole config (a recipe changed without its bases, or the
    reverse, fails); the path the recipe adds is the preset's."""
    recipe = pretrain.load_recipe()
    info = pretrained.manifest(preset)
    tc = pretrain.train_config(recipe, preset)
    assert info["train"] == json.loads(json.dumps(dataclasses.asdict(tc)))
    planned = pretrain.stage_configs(recipe, tc, preset)
    assert len(info.get("stages", [])) == len(planned)
    added = pretrain_stages.details(recipe)
    for stage, stc in zip(info.get("stages", []), planned, strict=True):
        assert {k: stage[k] for k in pretrain_stages.STAGE_KEYS} == {
            k: getattr(stc, k) for k in pretrain_stages.STAGE_KEYS
        }
        for key, value in pretrain_stages.stage_changes(tc, stc).items():
            assert stage.get(key) == value, key
        assert stage.get("detail") == added.get(stage["stage"])
    assert sum(added.values()) == PRESETS[preset].detail


@pytest.mark.parametrize("preset", COMMITTED)
def test_committed_command_first_steps_reproduce(preset, capsys):
    """The manifest's initial weights and first 3 losses, recomputed here from the manifest alone
    (equal on the CPU type that made them; within 1e-4 relative on another)."""
    want, got = pretrain.reproduce(preset, 3)
    assert "initial weights differ" not in capsys.readouterr().err  # stage 1 without the path
    assert len(got) == 3
    assert got == pytest.approx(want, rel=1e-4)


def test_committed_recipe_uses_the_searched_learning_rates():
    """Every family's rate in the recipe is the best of its recorded search."""
    recipe = pretrain.load_recipe()
    record = (ROOT / "benchmarks/results/cpu/pretrain_lr_search.json").read_text()
    results = json.loads(record)
    assert set(results) == set(recipe["presets"])
    for preset in recipe["presets"]:
        assert recipe["lr"][preset] == pytest.approx(pretrain.best_lr(results, preset))
        assert {f"{lr:g}" for lr in recipe["search"]["lrs"]} <= set(results[preset])
    table = (ROOT / "benchmarks/results/cpu/pretrain_lr_search.md").read_text()
    assert table.count("**yes**") == len(recipe["presets"])


# --- the module -----------------------------------------------------------------------------


def test_save_verify_load_round_trip_and_tampering(tmp_path):
    torch.manual_seed(0)
    model = build_model("hrsam_tiny")
    info = pretrained.save(model, "hrsam_tiny", {"steps": 1}, tmp_path)
    assert pretrained.available(tmp_path) == ["hrsam_tiny"]
    assert (tmp_path / "hrsam_tiny.safetensors").read_bytes()[8:9] == b"{"  # a JSON header
    state = pretrained.load_state("hrsam_tiny", tmp_path)
    assert pretrained.state_sha256(state) == pretrained.state_sha256(model.state_dict())
    assert info["sha256"] == pretrained.verify("hrsam_tiny", tmp_path)["sha256"]
    path = tmp_path / "hrsam_tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"sha256 .* its manifest says"):
        pretrained.load_state("hrsam_tiny", tmp_path)
    missing = r"no pretrained weights for preset .sam_tiny. in .*; pretrained: hrsam_tiny"
    with pytest.raises(CheckpointError, match=missing):
        pretrained.manifest("sam_tiny", tmp_path)


# --- the command at micro scale --------------------------------------------------------------


def test_pretrain_writes_weights_manifest_and_mlflow_run(micro_weights):
    import mlflow

    info = json.loads((micro_weights / "weights" / "hrsam_tiny.json").read_text())
    assert info["steps"] == 12 and len(info["first_losses"]) == 5
    assert info["machine"]["threads"] == 1
    assert info["train"]["lr"] == 0.001 and info["train"]["ts"] == 64
    assert info["data"]["n_train"] == 3 and info["data"]["objects_train"] >= 6
    assert set(info["validation"]) == {"64"}
    assert 0 <= info["validation"]["64"]["miou_at_1"] <= 1
    assert "--recipe" in info["command"]
    runs = mlflow.MlflowClient(f"sqlite:///{micro_weights}/m.db").search_runs(
        [
            mlflow.MlflowClient(f"sqlite:///{micro_weights}/m.db")
            .get_experiment_by_name("pretrain")
            .experiment_id
        ]
    )
    assert [r.info.run_name for r in runs] == ["hrsam_tiny"]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.lr"] == "0.001"
    assert "val_ts64_miou_at_1" in runs[0].data.metrics


def test_reproduce_from_the_manifest_alone(micro_weights, capsys):
    """The first steps rebuilt from the manifest (only the scenes they draw, generated alone)
    give the recorded losses exactly on this machine; a changed loss is caught (exit 1)."""
    weights = micro_weights / "weights"
    args = ["--reproduce", "3", "--export-to", str(weights), "hrsam_tiny"]
    assert pretrain.main(args) == 0
    assert "match (largest relative difference 0.00e+00" in capsys.readouterr().out
    info = json.loads((weights / "hrsam_tiny.json").read_text())
    info["first_losses"][1] *= 1.01
    (weights / "hrsam_tiny.json").write_text(json.dumps(info))
    try:
        assert pretrain.main(args) == 1
        assert "DIFFER" in capsys.readouterr().out
    finally:
        info["first_losses"][1] /= 1.01
        (weights / "hrsam_tiny.json").write_text(json.dumps(info))


def test_pretrain_resumes_from_its_last_checkpoint(tmp_path):
    """A run stopped after its checkpoint at step 5 and started again ends with the weights of
    an uninterrupted run."""
    micro_recipe(tmp_path)
    assert run_pretrain(tmp_path, "sam_tiny") == 0
    whole = pretrained.state_sha256(pretrained.load_state("sam_tiny", tmp_path / "weights"))
    folder = tmp_path / "out" / "sam_tiny"
    state = torch.load(folder / "step_000005.pt", weights_only=True)
    torch.save(state, folder / "last.pt")
    shutil.rmtree(tmp_path / "weights")
    assert run_pretrain(tmp_path, "sam_tiny") == 0
    resumed = pretrained.state_sha256(pretrained.load_state("sam_tiny", tmp_path / "weights"))
    assert resumed == whole
    stretches = json.loads((folder / "run.json").read_text())["stretches"]
    assert [s["to_step"] for s in stretches] == [12, 12]


STAGE = {"ts": 96, "steps": 4, "warmup": 1, "seed": 1, "ckpt_every": 2}


def test_a_stage_continues_from_the_first_and_resumes_inside_itself(tmp_path):
    """A recipe stage trains on from the first stage's weights (its own ts, steps and seed), is
    recorded in the manifest, and a run stopped inside it resumes to the same weights."""
    micro_recipe(tmp_path)
    assert run_pretrain(tmp_path, "hrsam_tiny") == 0
    one_stage = pretrained.load_state("hrsam_tiny", tmp_path / "weights")
    micro_recipe(tmp_path, stages=[STAGE])  # the same folder: stage 1 is done, stage 2 runs
    assert run_pretrain(tmp_path, "hrsam_tiny") == 0
    info = pretrained.verify("hrsam_tiny", tmp_path / "weights")
    assert info["steps"] == 12 + 4 and info["train"]["ts"] == 64 and info["train"]["steps"] == 12
    [stage] = info["stages"]
    recorded = ("ts", "steps", "warmup", "seed")
    assert {k: stage[k] for k in recorded} == {k: STAGE[k] for k in recorded}
    assert stage["stage"] == 2
    assert stage["lr"] == MICRO_RECIPE["lr"]["hrsam_tiny"] and len(stage["git_sha"]) == 40
    assert len(stage["first_losses"]) == 4 and stage["wall_s"] > 0
    [where] = stage["machines"]  # the machine of its one stretch
    assert where["threads"] == 1 and where["torch"] == torch.__version__ and where["cpu"]
    two_stages = pretrained.load_state("hrsam_tiny", tmp_path / "weights")
    assert pretrained.state_sha256(two_stages) != pretrained.state_sha256(one_stage)
    folder = tmp_path / "out" / "hrsam_tiny"
    # stopped after stage 2's step 2 (its checkpoint): the resume gives the same weights
    stage2 = folder / "stage2"
    torch.save(torch.load(stage2 / "step_000002.pt", weights_only=True), stage2 / "last.pt")
    assert run_pretrain(tmp_path, "hrsam_tiny") == 0
    resumed = pretrained.state_sha256(pretrained.load_state("hrsam_tiny", tmp_path / "weights"))
    assert resumed == pretrained.state_sha256(two_stages)
    stretches = json.loads((folder / "run.json").read_text())["stretches"]
    assert [(s["stage"], s["to_step"]) for s in stretches] == [(1, 12), (2, 4), (2, 4)]


def test_a_stage_that_adds_the_detail_path_records_it_and_resumes_inside_itself(tmp_path, capsys):
    """A recipe whose stage 2 adds the decoder's detail path: stage 1 trains the preset without
    it (the manifest's ``init_detail``), stage 2 adds it and records it, the exported weights load
    into the preset as they are, a run stopped inside stage 2 resumes to the same weights, and
    the first steps reproduce from the manifest (stage 1 rebuilt without the path)."""
    micro_recipe(tmp_path, stages=[{**STAGE, "detail": 16}])
    assert run_pretrain(tmp_path, "hrsam_tiny") == 0
    info = pretrained.verify("hrsam_tiny", tmp_path / "weights")
    assert info["init_detail"] == 0 and info["stages"][0]["detail"] == 16
    folder = tmp_path / "out" / "hrsam_tiny"
    first = torch.load(folder / "last.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("detail_encoder.") for k in first)  # stage 1: no path
    weights = pretrained.load_state("hrsam_tiny", tmp_path / "weights")
    build_model("hrsam_tiny").load_state_dict(weights, strict=True)
    assert weights["mask_decoder.detail_fuse.conv2.weight"].abs().sum() > 0  # trained off zero
    stage2 = folder / "stage2"
    torch.save(torch.load(stage2 / "step_000002.pt", weights_only=True), stage2 / "last.pt")
    assert run_pretrain(tmp_path, "hrsam_tiny") == 0
    resumed = pretrained.load_state("hrsam_tiny", tmp_path / "weights")
    assert pretrained.state_sha256(resumed) == pretrained.state_sha256(weights)
    capsys.readouterr()
    args = ["--reproduce", "3", "--export-to", str(tmp_path / "weights"), "hrsam_tiny"]
    assert pretrain.main(args) == 0
    out = capsys.readouterr()
    assert "match (largest relative difference 0.00e+00" in out.out
    assert "initial weights differ" not in out.err


def test_a_stage_rate_is_one_for_all_or_one_per_preset():
    """A stage's ``lr`` per preset (the others keep their stage-1 rate) or one for every preset."""
    recipe = {**MICRO_RECIPE, "stages": [{"ts": 96, "lr": {"hrsam_tiny": 0.01}}, {"lr": 0.02}]}
    for preset, want in (("hrsam_tiny", 0.01), ("sam_tiny", MICRO_RECIPE["lr"]["sam_tiny"])):
        tc = pretrain.train_config(recipe, preset)
        two, three = pretrain.stage_configs(recipe, tc, preset)
        assert (two.lr, two.ts, three.lr, three.ts) == (want, 96, 0.02, 64)


@pytest.mark.parametrize("detail", [None, 16], ids=["plain", "detail"])
def test_from_base_trains_only_the_new_stage_and_carries_the_base_record(
    tmp_path, monkeypatch, detail
):
    """A finished one-stage base continued with a recipe that gained a stage (``--from-base``,
    new training folders: nothing of the base's run but its shipped files) ends with the weights
    of the same two stages trained in one folder, and its manifest carries the base's record.
    With ``detail`` the new stage adds the decoder's detail path to a base made without one (as
    the preset was when the committed bases' first stages ran)."""
    stage = STAGE if detail is None else {**STAGE, "detail": detail}
    micro_recipe(tmp_path)
    with monkeypatch.context() as m:
        if detail:  # the base: the preset without the path
            plain = dataclasses.replace(PRESETS["hrsam_tiny"], detail=0)
            m.setitem(PRESETS, "hrsam_tiny", plain)
        assert run_pretrain(tmp_path, "hrsam_tiny") == 0
    shutil.copytree(tmp_path / "weights", tmp_path / "base")
    base = pretrained.verify("hrsam_tiny", tmp_path / "base")
    assert (
        "detail_encoder.conv1.weight" in pretrained.load_state("hrsam_tiny", tmp_path / "base")
    ) == (detail is None)
    micro_recipe(tmp_path, stages=[stage])
    assert run_pretrain(tmp_path, "hrsam_tiny") == 0  # the reference: both stages in one folder
    whole = pretrained.verify("hrsam_tiny", tmp_path / "weights")
    monkeypatch.setenv(pretrained.ENV, str(tmp_path / "base"))
    args = ["--recipe", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out2")]
    args += ["--export-to", str(tmp_path / "w2"), "--mlflow", "none", "--from-base", "hrsam_tiny"]
    assert pretrain.main(args) == 0
    info = pretrained.verify("hrsam_tiny", tmp_path / "w2")
    got = pretrained.state_sha256(pretrained.load_state("hrsam_tiny", tmp_path / "w2"))
    assert got == pretrained.state_sha256(pretrained.load_state("hrsam_tiny", tmp_path / "weights"))
    assert info["validation"] == whole["validation"]
    assert info["base_sha256"] == base["sha256"] and "--from-base" in info["command"]
    assert not (tmp_path / "out2" / "hrsam_tiny" / "last.pt").exists()  # stage 1 not trained
    for key in ("steps", "train", "init_sha256", "first_samples", "first_losses", "final_loss"):
        assert info[key] == whole[key], key
    assert info["git_sha"] == base["git_sha"] and info["wall_s"] > base["wall_s"]
    [record], [want] = info["stages"], whole["stages"]
    for key in (*pretrain_stages.STAGE_KEYS, "first_losses", "final_loss", "ckpt_every"):
        assert record[key] == want[key], key
    assert record["ckpt_every"] == STAGE["ckpt_every"]  # a key the stage sets is its record
    assert record.get("detail") == want.get("detail") == detail
    assert info["init_detail"] == whole["init_detail"] == (16 if detail is None else 0)
    model = build_model("hrsam_tiny")  # the preset (with its path) loads the weights as they are
    model.load_state_dict(pretrained.load_state("hrsam_tiny", tmp_path / "w2"), strict=True)
    # run again in the same folders: every stage is done, the same weights
    assert pretrain.main(args) == 0
    again = pretrained.state_sha256(pretrained.load_state("hrsam_tiny", tmp_path / "w2"))
    assert again == got


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "hrsam_tiny's base already holds every stage of the recipe (1); add a stage"),
        (
            {"train": {**MICRO_RECIPE["train"], "ts": 96}, "stages": [STAGE]},
            "hrsam_tiny's base trained its first stage with ts=64, the recipe says 96",
        ),
        (
            {"stages": [{**STAGE, "seed": 5}, STAGE]},
            "hrsam_tiny's base trained stage 2 with seed=1, the recipe says 5",
        ),
        (  # a stage's other TrainConfig keys (here the click rounds) are its record too
            {"stages": [{**STAGE, "gamma": 0.95}, STAGE]},
            "hrsam_tiny's base trained stage 2 with gamma=None, the recipe says 0.95",
        ),
    ],
)
def test_from_base_refuses_a_base_the_recipe_did_not_make(
    micro_weights, tmp_path, monkeypatch, capsys, changes, message
):
    base = micro_weights / "weights"
    if "stage 2" in message:  # a two-stage base: the record of a stage 2 (the file unchanged)
        base = tmp_path / "two"
        shutil.copytree(micro_weights / "weights", base)
        info = json.loads((base / "hrsam_tiny.json").read_text())
        stage = {"stage": 2, **{k: STAGE[k] for k in ("ts", "steps", "warmup", "seed")}}
        stage["ckpt_every"] = STAGE["ckpt_every"]  # what the stage sets beyond STAGE_KEYS
        info["stages"] = [{**stage, "lr": MICRO_RECIPE["lr"]["hrsam_tiny"]}]
        (base / "hrsam_tiny.json").write_text(json.dumps(info))
    micro_recipe(tmp_path, **changes)
    monkeypatch.setenv(pretrained.ENV, str(base))
    before = pretrained.sha256(base / "hrsam_tiny.safetensors")
    capsys.readouterr()  # what making the base printed
    assert run_pretrain(tmp_path, "--from-base", "hrsam_tiny") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --from-base: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "weights").exists()
    assert pretrained.sha256(base / "hrsam_tiny.safetensors") == before


def test_from_base_refuses_to_resume_from_a_base_replaced_since_the_run_started(
    micro_weights, tmp_path, monkeypatch, capsys
):
    """A continued run whose new stage has no checkpoint yet resumes from the base's file: if
    the shipped base changed since the run started, one line and exit 2 before any training."""
    base = micro_weights / "weights"
    recipe = yaml.safe_load(micro_recipe(tmp_path, stages=[STAGE]).read_text())
    monkeypatch.setenv(pretrained.ENV, str(base))
    start = pretrain_stages.base_start("hrsam_tiny", recipe, base)
    start["base"]["sha256"] = "0" * 64  # the run started from another file
    folder = tmp_path / "out" / "hrsam_tiny"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"stretches": [], **start}))
    capsys.readouterr()
    assert run_pretrain(tmp_path, "--from-base", "hrsam_tiny") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --from-base: ") and "\n" not in err
    assert "started from 000000000000..." in err and "start it again in a new --out" in err
    assert sorted(p.name for p in folder.iterdir()) == ["run.json"]  # nothing trained
    assert not (tmp_path / "weights").exists()


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"tss": 512}, "recipe stage 2: unknown key 'tss'; a stage sets TrainConfig's keys (amp,"),
        ({"detail": 0}, "recipe stage 2: detail=0; the path's channels, an int >= 1"),
        ({"detail": 8}, "recipe stage 2: detail=8, but hrsam_tiny's detail path has 16 channels"),
        ({"ts": 500}, "recipe stage 2: ts=500 must be a positive multiple of 16"),
    ],
)
def test_a_bad_stage_is_one_line_before_any_training(tmp_path, capsys, stage, message):
    micro_recipe(tmp_path, stages=[stage])
    assert run_pretrain(tmp_path, "hrsam_tiny") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {err[7:]}" and message in err and "\n" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "weights").exists()


def test_search_records_every_rate_and_picks_the_best(tmp_path, capsys):
    micro_recipe(tmp_path)
    assert run_pretrain(tmp_path, "--search", "hrsam_tiny") == 0
    results = json.loads((tmp_path / "out/search/hrsam_tiny/results.json").read_text())
    assert {"0.001", "0.003"} <= set(results)
    best = max(results, key=lambda lr: results[lr]["miou_at_5"])
    assert f"hrsam_tiny: best lr {float(best):g}" in capsys.readouterr().out
    table = (tmp_path / "out/search/record.md").read_text()
    assert table.count("| hrsam_tiny |") == len(results) and table.count("**yes**") == 1
    # run again: every rate is done, nothing trains (the folder's results are the search's)
    assert run_pretrain(tmp_path, "--search", "hrsam_tiny") == 0
    assert json.loads((tmp_path / "out/search/hrsam_tiny/results.json").read_text()) == results


def test_search_extends_the_grid_while_the_best_is_at_its_edge():
    from ablations.pretrain_search import _rates

    grid = {"lrs": [0.0003, 0.001, 0.003]}

    def scored(**miou):
        return {lr: {"miou_at_5": v} for lr, v in miou.items()}

    assert list(_rates(grid, {})) == [0.0003, 0.001, 0.003]  # the grid (none run here)
    low = scored(**{"0.0003": 0.5, "0.001": 0.2, "0.003": 0.1})
    gen = _rates(grid, low)
    assert next(gen) == 0.0001  # best at the low edge: one step below
    low["0.0001"] = {"miou_at_5": 0.6}
    assert next(gen) == 3e-05  # still the best: one more (EXTEND = 2)
    low["3e-05"] = {"miou_at_5": 0.7}
    assert list(gen) == []  # at most two beyond the grid
    high = scored(**{"0.0003": 0.1, "0.001": 0.2, "0.003": 0.3})
    assert list(_rates(grid, high))[:1] == [0.01]
    inside = scored(**{"0.0003": 0.1, "0.001": 0.4, "0.003": 0.3})
    assert list(_rates(grid, inside)) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vit_tiny"], "unknown preset 'vit_tiny'; the recipe pretrains: sam_tiny, hrsam_tiny"),
        (["--recipe", "nope.yaml"], "--recipe nope.yaml: No such file"),
    ],
)
def test_pretrain_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert pretrain.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


# --- sweeps that finetune from a base ---------------------------------------------------------

SWEEP_MICRO = [
    "train.steps=3", "train.ts=64", "train.ckpt_every=0", "data.size=64", "data.n_train=2",
    "data.n_val=2", "eval.ts=64", "eval.max_clicks=3", "bench.reps=1", "bench.sat_points=2",
    "report=false", "executor=debug",
]  # fmt: skip


def test_a_sweep_finetunes_from_the_pretrained_base_and_names_it(micro_weights, tmp_path,
                                                                  monkeypatch, capsys):  # fmt: skip
    """train.base=pretrained: the plan names the base by sha256, the trial id and training key
    change with the weights, the record and MLflow params hold the sha256, and the finetune
    starts from exactly those weights."""
    import mlflow

    from ablations import sweep

    weights = micro_weights / "weights"
    sha = json.loads((weights / "hrsam_tiny.json").read_text())["sha256"]
    monkeypatch.setenv(pretrained.ENV, str(weights))
    monkeypatch.chdir(tmp_path)
    args = ["grid=window_size", "model.window_size=8", "train.base=pretrained", *SWEEP_MICRO]
    assert sweep.main([*args, "--dry-run"]) == 0
    assert f"from pretrained hrsam_tiny sha256 {sha[:12]}" in capsys.readouterr().out
    assert sweep.main(args) == 0
    [path] = tmp_path.glob("outputs/sweeps/window_size/trials/*/result.json")
    record = json.loads(path.read_text())
    assert record["params"]["train.base_sha256"] == sha
    assert record["provenance"]["base_sha256"] == sha
    assert record["provenance"]["base"] == f"pretrained-{sha[:12]}"
    assert record["metrics"]["base_fresh_tensors"] == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("window_size").experiment_id
    [run] = [r for r in client.search_runs([exp]) if r.data.tags.get("hrsam.trial_id")]
    assert run.data.params["train.base_sha256"] == sha
    # other weights under the same name: another sha256, another trial id, nothing reused
    other = tmp_path / "other"
    shutil.copytree(weights, other)
    model = build_model("hrsam_tiny")
    model.load_state_dict(pretrained.load_state("hrsam_tiny", weights))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    info = json.loads((weights / "hrsam_tiny.json").read_text())
    new = pretrained.save(model, "hrsam_tiny", {k: v for k, v in info.items() if k not in (
        "preset", "file", "sha256")}, other)  # fmt: skip
    monkeypatch.setenv(pretrained.ENV, str(other))
    capsys.readouterr()
    assert sweep.main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"sha256 {new['sha256'][:12]}" in plan and record["trial_id"] not in plan


@pytest.mark.skipif(len(COMMITTED) < 3, reason="needs the three committed bases")
def test_every_default_grid_that_trains_finetunes_from_the_committed_bases():
    """The embedded default of every grid that trains (the demo's window_size, paper_main, scale,
    ...) starts from the preset's committed base, named by the sha256 of its manifest."""
    from ablations import config as C
    from ablations import spec as S

    seen = set()
    for grid in C.list_grids():
        sweep = S.expand(*C.compose({"grid": grid}))
        for t in sweep.trials:
            if t.train is None:
                continue
            preset = t.config["model"]["preset"]
            assert t.base.pretrained, (grid, t.label)
            sha = pretrained.manifest(preset)["sha256"]
            assert t.config["train"]["base_sha256"] == sha, (grid, t.label)
            seen.add(preset)
    assert seen == {"sam_tiny", "hrsam_tiny", "hrsampp_tiny"}
