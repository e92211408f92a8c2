"""Precision is a setting (issue 18): fp32 | bf16 | fp16 under autocast, recorded with every run;
support() is asked for the dtype that runs; bad values are one line and exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablations import sweep
from hrsam.precision import autocast, check_precision, dtype
from tests.helpers import DEBUG_MICRO as MICRO
from tests.helpers import mlflow_params, records


def test_precision_names_and_dtypes():
    assert dtype("fp32") is torch.float32 and dtype("bf16") is torch.bfloat16
    assert dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match=r"precision='fp8' must be one of fp32, bf16, fp16"):
        check_precision("fp8")
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32


@pytest.mark.slow
def test_micro_sweep_in_bf16_finishes_and_records_bf16(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["grid=window_size", "model.window_size=4", "precision=bf16", *MICRO]
    assert sweep.main(args) == 0
    [record] = records(tmp_path, "window_size")
    assert record.ok, record.error
    assert record.params["precision"] == "bf16" and record.resolved["precision"] == "bf16"
    assert record.provenance["precision"] == "bf16" and record.provenance["tf32"] == "False"
    assert "kernels bf16" in record.provenance["environment"]
    assert record.metrics["encoder_ms"] > 0 and np.isfinite(record.metrics["noc85"])
    [run] = mlflow_params(tmp_path, "window_size").to_dict("records")
    assert run["params.precision"] == "bf16" and run["tags.precision"] == "bf16"


@pytest.mark.slow
def test_flash_in_fp32_is_unsupported_with_the_dtype_as_reason(tmp_path, monkeypatch):
    """support() is asked for the precision's dtype: flash in fp32 is UNSUPPORTED (naming the
    dtype), a result and not a crash."""
    monkeypatch.chdir(tmp_path)
    args = ["grid=window_size", "model.window_size=4", "model.kernel=flash", *MICRO]
    assert sweep.main(args) == 0
    [record] = records(tmp_path, "window_size")
    assert record.status == "UNSUPPORTED"
    assert "kernel flash cannot run on cpu" in record.reason
    assert "not torch.float32" in record.reason


def test_fp32_trial_ids_did_not_change():
    """precision / tf32 at their defaults stay out of the hash: sweeps recorded before these keys
    existed keep their trial ids (and resume); another precision is another trial."""
    from ablations import config as C
    from ablations import spec as S

    base = ["grid=window_size", "model.window_size=4", *MICRO]
    fp32 = S.expand(*C.compose(C.parse_args(base)[0])).trials[0]
    bf16 = S.expand(*C.compose(C.parse_args([*base, "precision=bf16"])[0])).trials[0]
    assert fp32.trial_id != bf16.trial_id and fp32.train_key == bf16.train_key
    view = S._hash_view(fp32.config)
    assert "precision" not in view and "tf32" not in view and "precision" not in view["train"]


@pytest.mark.parametrize(
    ("main", "args"),
    [
        ("ablations.sweep", ["grid=window_size", "precision=fp64", "--dry-run"]),
        ("hrsam.evaluate", ["precision=fp64"]),
        ("hrsam.train", ["recipe=tiny-synthetic", "precision=fp64", "steps=1"]),
    ],
)
def test_a_bad_precision_is_one_line_and_exit_2(main, args, capsys, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(main if main != "hrsam.train" else "hrsam.train.__main__")
    try:
        code = module.main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "fp64" in err[0] and "fp32, bf16, fp16" in err[0]


def test_evaluate_runs_on_the_device_it_is_given_in_bf16():
    """hrsam.interactive.evaluate in bf16 on CPU: logits thresholded in float32, finite IoUs."""
    from hrsam.interactive import Sample, evaluate
    from tests.standins import GroundTruthStandIn

    gt = np.zeros((64, 64), bool)
    gt[16:48, 16:48] = True
    image = np.repeat(gt[..., None], 3, -1).astype(np.uint8) * 255

    class Model(GroundTruthStandIn):
        image_format = "RGB"

    r = evaluate(Model(), [Sample("a", image, gt)], "hrsam", 64, 2, precision="bf16")
    assert r.ious.shape == (1, 2) and np.isfinite(r.ious).all()


def test_hrsam_evaluate_bad_device_is_one_line(capsys):
    from hrsam import evaluate as cli_evaluate

    assert cli_evaluate.main(["device=tpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device='tpu'" in err[0] and "cpu, cuda" in err[0]
