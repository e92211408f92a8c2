"""Interactive evaluation: click simulation (ritm / hrsam protocols), metrics, the click loop."""

from hrsam.interactive.clicker import PROTOCOLS, Click, next_click
from hrsam.interactive.evaluate import EvalResult, Sample, evaluate
from hrsam.interactive.metrics import (
    boundary_iou,
    iou,
    miou_at,
    noc,
    nof,
    nof_strict,
    summarize,
)

__all__ = [
    "PROTOCOLS",
    "Click",
    "EvalResult",
    "Sample",
    "boundary_iou",
    "evaluate",
    "iou",
    "miou_at",
    "next_click",
    "noc",
    "nof",
    "nof_strict",
    "summarize",
]
