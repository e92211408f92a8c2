"""The toolkit of the project's ``key=value`` command lines (``hrsam.evaluate``, ``hrsam.train``,
``ablations.sync``, ``benchmarks.*``): typed keys, the closest key suggested for a misspelling,
one-line errors with exit code 2, progress bars. Public: the shells import it."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from dataclasses import asdict


class UsageError(ValueError):
    """Bad command line: printed as one line, exit code 2."""


def parse(argv: list[str], keys: dict[str, tuple[type, str]], defaults: dict) -> dict:
    cfg = dict(defaults)
    for arg in argv:
        if "=" not in arg:
            raise UsageError(f"argument {arg!r} is not key=value; keys: {', '.join(keys)}")
        key, value = arg.split("=", 1)
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; keys: {', '.join(keys)}"
            raise UsageError(f"unknown key {key!r}{hint}")
        typ = keys[key][0]
        try:
            cfg[key] = _convert(typ, value)
        except ValueError:
            raise UsageError(f"{key}={value!r} must be {typ.__name__}") from None
    return cfg


def _convert(typ: type, value: str):
    if typ is bool:
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(value)
    return typ(value)


DATA_KEYS = {  # the dataset keys every key=value CLI shares (hrsam.data.DataConfig's fields)
    "data.name": (str, "dataset: davis, hqseg44k, grabcut, berkeley, synthetic"),
    "data.root": (str, "dataset folder (synthetic: one subfolder per generator spec)"),
    "data.size": (int, "synthetic: long side in px"),
    "data.n_train": (int, "synthetic: training images"),
    "data.n_val": (int, "synthetic: validation images"),
    "data.stroke": (float, "synthetic: scale of the fine structure (1: 1-3 px branches)"),
    "data.contrast": (float, "synthetic: object / background contrast (1: as drawn)"),
    "data.version": (int, "synthetic: generator version (3: multi-object scenes, 2: one blob)"),
    "data.objects": (str, "synthetic v3: objects per scene, N or MIN-MAX"),
    "data.limit": (int, "use only the first N objects (0: all)"),
}


def data_defaults() -> dict:
    """``data.*`` defaults: `hrsam.data.DataConfig`'s, the one place they are defined."""
    from hrsam.data import DataConfig

    return {f"data.{k}": v for k, v in asdict(DataConfig()).items()}


def data_config(cfg: dict):
    """`hrsam.data.DataConfig` from the ``data.*`` keys of a parsed command line."""
    from hrsam.data import DataConfig

    return DataConfig(**{k.removeprefix("data."): v for k, v in cfg.items() if k in DATA_KEYS})


def main(argv: list[str] | None, doc: str, keys, defaults: dict, run) -> int:
    """The shell of a ``key=value`` CLI: ``--help``, parse, ``run(cfg)`` -> exit code; a
    `UsageError` from either is one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print_help(doc, keys, defaults)
        return 0
    try:
        return run(parse(argv, keys, defaults))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def print_help(doc: str, keys: dict[str, tuple[type, str]], defaults: dict) -> None:
    print(doc)
    print("keys:")
    for k, (typ, text) in keys.items():
        default = f" (default {defaults[k]})" if k in defaults else ""
        print(f"  {k:<16} {typ.__name__:<5} {text}{default}")


class Progress:
    """A one-line progress bar on stderr: done/total, a label, the rate and the ETA."""

    def __init__(self, total: int, unit: str = "") -> None:
        self.total, self.unit, self.start = total, unit, time.perf_counter()

    def __call__(self, done: int, label: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * done / max(1, self.total))
        print(
            f"\r[{bar:<30}] {done}/{self.total} {label[:40]:<40} {rate:6.2f} {self.unit}/s "
            f"eta {eta:5.0f}s",
            end="" if done < self.total else "\n",
            file=sys.stderr,
            flush=True,
        )


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house error: one line, exit code 2, the closest option suggested."""

    def error(self, message: str):
        options = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        words = message.replace(",", " ").replace(":", " ").split()
        unknown = [w for w in words if w.startswith("-") and w.split("=")[0] not in options]
        hints = [difflib.get_close_matches(u.split("=")[0], options, n=1) for u in unknown]
        hint = "; ".join(f"did you mean {h[0]!r}?" for h in hints if h)
        print(f"error: {message}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        sys.exit(2)
