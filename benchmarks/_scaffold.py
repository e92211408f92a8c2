"""The scaffold every benchmark shares: its command line, its device, its table and its files.

A benchmark module (`benchmarks.attention`, `benchmarks.scan`, `benchmarks.backbone`,
`benchmarks.cycle_scan`, `benchmarks.train_step`, `benchmarks.detail_cost`,
`benchmarks.report_build`, `benchmarks.gpu_check`) is a thin shell in the manner of
attention-gym and flash-attention's benchmarks: parse, check, time, print a table, write a CSV.
This module holds what those shells have in common, so that each of them keeps only its own
cases:

- `parser` and `add_options`: the ``python -m benchmarks.<name>`` parser with one-line errors
  (`hrsam.cli.ArgumentParser`) and the common options (``--device``, ``--dtype``, ``--reps``,
  ``--budget-gb``, ``--max-case-s``, ``--out``); `parse` turns ``--device`` into a
  ``torch.device`` once, a bad one a one-line error;
- `banner`: the first printed line (device, torch version, the run's settings);
- `render`, `fmt`, `interval`: the printed ``| a | b |`` table and its cells;
- `results_dir`, `stem`, `markdown`, `write_results`, `show`: ``<stem>.csv`` and
  ``<stem>.md`` under ``--out`` or ``benchmarks/results/<device>/``, the markdown opening with
  the device, torch version, date and command; the table and checks printed at the end of a run.

Timing, peak memory and the CSV writer itself are `benchmarks._timing`'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch

from benchmarks._timing import device_name, write_csv
from hrsam import cli

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU = torch.device("cpu")

# The common options by name: what `add_options` adds; a benchmark may change the default.
OPTIONS: dict[str, dict] = {
    # explicit, never guessed from the host: the same command gives the same table on a GPU host
    "device": dict(default="cpu", help="cpu (default), cuda or cuda:<index>"),
    "dtype": dict(choices=list(DTYPES), default="fp32"),
    "reps": dict(type=int, default=3, help="timed repetitions per case (median)"),
    "budget_gb": dict(
        type=float, default=None, help="memory budget (default: 60%% of the device's memory)"
    ),
    "max_case_s": dict(
        type=float,
        default=60.0,
        help="skip cases estimated to take longer than this (default: %(default)g)",
    ),
    "out": dict(type=Path, default=None),  # help: `add_options`, by whether it has --device
}


def parser(name: str, description: str, *examples: str) -> cli.ArgumentParser:
    """The parser of ``python -m benchmarks.<name>``; each example is the arguments of one
    command line shown under ``--help``, one a line (the epilog is printed as written)."""
    lines = [f"  python -m benchmarks.{name} {e}" for e in examples]
    if not lines:
        return cli.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    return cli.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=description,
        epilog=("examples:\n" if len(lines) > 1 else "example:\n") + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_options(p: argparse.ArgumentParser, *names: str, **defaults) -> None:
    """Adds the common options ``names`` (keys of `OPTIONS`, ``max_case_s`` for
    ``--max-case-s``) in that order; ``defaults`` sets an option's default by name. ``--out``'s
    default folder is ``results/<device>`` after a ``--device``, else ``results/cpu``."""
    unknown = set(defaults) - set(names)
    if unknown:
        raise ValueError(f"defaults for options not added: {sorted(unknown)}")
    for name in names:
        kwargs = {**OPTIONS[name], **({"default": defaults[name]} if name in defaults else {})}
        if name == "out":
            where = "<device>" if p.get_default("device") is not None else "cpu"
            kwargs["help"] = f"results folder (default: benchmarks/results/{where})"
        p.add_argument("--" + name.replace("_", "-"), **kwargs)


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``p.parse_args(argv)`` with ``--device`` (when ``p`` has it) as a ``torch.device``; a
    name torch does not know, or CUDA on a machine without it, is a one-line error (exit 2)."""
    args = p.parse_args(argv)
    if not hasattr(args, "device"):
        return args
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r}: not a torch device; use cpu or cuda")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine; use --device cpu")
    return args


def banner(device: torch.device, *settings: str) -> None:
    """Prints ``device: <name> | torch <version> | <setting> | ...``, a run's first line."""
    line = " | ".join([f"device: {device_name(device)}", f"torch {torch.__version__}", *settings])
    print(line, flush=True)


def fmt(x: float | None, nd: int = 1) -> str:
    """A table cell: ``x`` with ``nd`` decimals, ``-`` when not measured."""
    return "-" if x is None else f"{x:.{nd}f}"


def interval(r: dict) -> str:
    """A paired ratio and its 95% interval (``r``'s ``ratio``, ``lo``, ``hi``):
    ``1.23x [1.10, 1.40]``."""
    return f"{r['ratio']:.2f}x [{r['lo']:.2f}, {r['hi']:.2f}]"


def render(rows: list[list[str]], header: list[str]) -> str:
    """The printed (and markdown) table: ``header`` and ``rows`` in padded ``| a | b |`` cells."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    sep = "-|-".join("-" * w for w in widths)
    body = [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(["| " + line + " |", "|-" + sep + "-|", *("| " + b + " |" for b in body)])


def results_dir(out: Path | None, device: torch.device = CPU) -> Path:
    """``out`` (``--out``) or ``benchmarks/results/cpu``, on a GPU ``benchmarks/results/<gpu>``."""
    return out or RESULTS / ("cpu" if device.type == "cpu" else device_name(device))


def stem(name: str, dtype: str) -> str:
    """The results files' name: ``name`` in fp32, ``name_<dtype>`` otherwise."""
    return name if dtype == "fp32" else f"{name}_{dtype}"


def markdown(
    title: str,
    name: str,
    argv: list[str] | None,
    settings: str,
    table: str,
    checks: list[str] | None = None,
    device: torch.device = CPU,
    machine: str | None = None,
) -> str:
    """A results file: ``# title``, the device and torch version (or ``machine``), the date and
    the command, ``settings`` (markdown list lines), the table and ``checks`` in a code block."""
    where = (
        f"- machine: {machine}\n"
        if machine
        else f"- device: {device_name(device)}\n- torch: {torch.__version__}\n"
    )
    text = (
        f"# {title}\n\n{where}- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- command: `python -m benchmarks.{name} {' '.join(argv or sys.argv[1:])}`\n"
        f"{settings}\n{table}\n"
    )
    return text if checks is None else text + "\n```\n" + "\n".join(checks) + "\n```\n"


def write_results(out_dir: Path, stem: str, fields: list[str], rows: list[dict], md: str) -> None:
    """``<stem>.csv`` (``rows``) and ``<stem>.md`` (``md``) under ``out_dir``, which is made when
    missing; prints where they went."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{stem}.csv", fields, rows)
    (out_dir / f"{stem}.md").write_text(md)
    print(f"\nwrote {out_dir / (stem + '.csv')} and {out_dir / (stem + '.md')}")


def show(table: str, checks: list[str] | None = None) -> None:
    """Prints the run's table and, after a blank line, its checks."""
    print()
    print(table)
    if checks is not None:
        print()
        print("\n".join(checks))
