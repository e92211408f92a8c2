"""The benchmarks' shared scaffold: the parser and common options, one-line device errors, the
table, the results files and where they go."""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks import _scaffold as scaffold
from benchmarks._timing import median_ms, paired_ratio


def test_parser_names_the_module_and_its_examples():
    one = scaffold.parser("scan", "Scans.", "--lengths 8")
    assert one.prog == "python -m benchmarks.scan"
    assert one.epilog == "example:\n  python -m benchmarks.scan --lengths 8"
    two = scaffold.parser("attention", "Attention.", "--grids 8", "--device cuda")
    assert two.epilog.splitlines() == [
        "examples:",
        "  python -m benchmarks.attention --grids 8",
        "  python -m benchmarks.attention --device cuda",
    ]
    assert scaffold.parser("gpu_check", "GPU.").epilog is None


def test_common_options_keep_their_defaults_unless_told():
    p = scaffold.parser("x", "X.")
    names = ("device", "dtype", "reps", "budget_gb", "max_case_s", "out")
    scaffold.add_options(p, *names, max_case_s=240.0)
    args = scaffold.parse(p, [])
    assert args.device == torch.device("cpu") and args.dtype == "fp32" and args.reps == 3
    assert args.budget_gb is None and args.max_case_s == 240.0 and args.out is None
    assert "benchmarks/results/<device>" in p.format_help()
    cpu_only = scaffold.parser("x", "X.")
    scaffold.add_options(cpu_only, "out")
    assert "(default: benchmarks/results/cpu)" in cpu_only.format_help()
    with pytest.raises(ValueError, match="reps"):
        scaffold.add_options(scaffold.parser("x", "X."), "out", reps=5)


def test_a_bad_device_is_one_line_exit_2(capsys):
    p = scaffold.parser("x", "X.")
    scaffold.add_options(p, "device")
    with pytest.raises(SystemExit) as exc:
        scaffold.parse(p, ["--device", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "--device 'nope': not a torch device; use cpu or cuda" in err[0]
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exc:
            scaffold.parse(p, ["--device", "cuda"])
        assert exc.value.code == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_table_cells():
    table = scaffold.render([["a", "1.0"], ["bcd", "-"]], ["name", "ms"])
    assert table.splitlines() == [
        "| name | ms  |",
        "|------|-----|",
        "| a    | 1.0 |",
        "| bcd  | -   |",
    ]
    assert scaffold.fmt(None) == "-" and scaffold.fmt(1.234) == "1.2" and scaffold.fmt(2.5, 0)
    assert scaffold.interval({"ratio": 1.234, "lo": 1.1, "hi": 1.4}) == "1.23x [1.10, 1.40]"
    assert scaffold.stem("scan", "fp32") == "scan" and scaffold.stem("scan", "bf16") == "scan_bf16"


def test_results_files_and_their_markdown(tmp_path, capsys):
    assert scaffold.results_dir(None) == scaffold.RESULTS / "cpu"
    assert scaffold.results_dir(tmp_path, torch.device("cpu")) == tmp_path
    md = scaffold.markdown("T", "scan", ["--reps", "1"], "- shape: s\n", "| t |", ["c1", "c2"])
    lines = md.splitlines()
    assert lines[:3] == ["# T", "", f"- device: {scaffold.device_name(scaffold.CPU)}"]
    assert lines[3] == f"- torch: {torch.__version__}" and lines[4].startswith("- date: ")
    assert lines[5:] == [
        "- command: `python -m benchmarks.scan --reps 1`",
        "- shape: s",
        "",
        "| t |",
        "",
        "```",
        "c1",
        "c2",
        "```",
    ]
    bare = scaffold.markdown("T", "x", ["-a"], "- s\n", "| t |", machine="box")
    assert bare.splitlines()[2] == "- machine: box" and bare.endswith("- s\n\n| t |\n")
    out = tmp_path / "new"
    scaffold.write_results(out, "scan", ["a", "b"], [{"a": 1, "b": None}], md)
    assert list(csv.DictReader(open(out / "scan.csv"))) == [{"a": "1", "b": ""}]
    assert (out / "scan.md").read_text() == md
    assert f"wrote {out / 'scan.csv'} and {out / 'scan.md'}" in capsys.readouterr().out


def test_paired_ratio_fields():
    r = paired_ratio([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert list(r) == ["ratio", "lo", "hi"] and r["ratio"] == r["lo"] == r["hi"] == 2.0
    assert median_ms([0.001, 0.002, 0.010]) == 2.0
