"""Every name a measurement is recorded under, spelled once
(docs/architecture.md).

The library's evaluation (`hrsam.interactive.metrics.summarize`, `click_use`), the trial record
(``result.json``), MLflow, the sweep's console table and ``results.md``, the reports and the
tests all take metric names from here; nowhere else spells one. One spelling per metric, in
MLflow's alphabet (letters, digits, ``_ - . /``): mIoU after 5 clicks is ``miou_at_5`` in the
record, in MLflow and in the reports; `label` gives the short form the tables print
(``miou@5``). Records written before this module used ``miou@5``; `canonical` reads them.

Pure Python: importable without torch, numpy or mlflow.
"""

from __future__ import annotations

import re

# -- quality (eval-protocol B): per dataset, from the objects x clicks IoU matrix ----------------

THRESHOLDS = (85, 90, 95)  # NoC@t / NoF@t in percent IoU
_NOC = re.compile(r"^(noc|nof)(\d+)$")
MIOU_CLICKS = (1, 2, 3, 4, 5, 10, 15, 20)  # the k of the mIoU@k a summary holds


def noc(t: int) -> str:
    """Mean number of clicks to reach IoU t%: ``noc90``."""
    return f"noc{t}"


def nof(t: int) -> str:
    """Objects that do not reach IoU t% within the click cap: ``nof90``."""
    return f"nof{t}"


def threshold_of(name: str) -> tuple[str, int] | None:
    """(``"noc"`` or ``"nof"``, t) of ``noc<t>`` / ``nof<t>``, else None."""
    m = _NOC.match(name)
    return (m[1], int(m[2])) if m else None


def is_count(name: str) -> bool:
    """NoF counts objects (its value is a count, not a mean)."""
    found = threshold_of(name)
    return bool(found and found[0] == "nof")


def miou_at(k: int) -> str:
    """Mean IoU after exactly ``k`` clicks: ``miou_at_5``."""
    return f"miou_at_{k}"


NOC85, NOC90, NOC95 = (noc(t) for t in THRESHOLDS)
NOF85, NOF90, NOF95 = (nof(t) for t in THRESHOLDS)
MIOU1, MIOU5 = miou_at(1), miou_at(5)
BIOU = "biou"  # boundary IoU after the last click (HQ-SAM)
QUALITY_METRICS = (NOC85, NOC90, NOC95, NOF85, NOF90, NOF95, BIOU)

_MIOU = re.compile(r"^miou(?:@|_at_)(\d+)$")  # ``miou@k`` is the pre-names spelling


def clicks_of(name: str) -> int | None:
    """``k`` of ``miou_at_k`` (or the old ``miou@k``), else None."""
    m = _MIOU.match(name)
    return int(m[1]) if m else None


def canonical(name: str) -> str:
    """A metric name as recorded today: ``miou@5`` (records before this module) -> ``miou_at_5``."""
    k = clicks_of(name)
    return name if k is None else miou_at(k)


def label(name: str) -> str:
    """The short column header the console table and ``results.md`` print: ``miou_at_5`` ->
    ``miou@5``; every other name is its own header."""
    k = clicks_of(name)
    return name if k is None else f"miou@{k}"


MIOU_SERIES = "miou"  # mIoU after k clicks as an MLflow step series (step = k)

# -- click use (hrsam.interactive.metrics.click_use): what clicks 2-5 and the previous mask add --

GAIN_CLICKS = (1, 5)  # click_gain = mIoU@5 - mIoU@1
CLICK_GAIN = "click_gain"  # with its 95% interval over objects in _lo / _hi
CLICK_GAIN_LO, CLICK_GAIN_HI = "click_gain_lo", "click_gain_hi"
NEG_CLICK_DELTA = "neg_click_delta"  # mean IoU change after a negative click
POS_CLICK_DELTA = "pos_click_delta"  # ... after a positive click
HARMFUL_CLICKS = "harmful_clicks"  # share of clicks 2.. that lower IoU
ORACLE_MIOU = "oracle_miou"  # first click + the ideal ts/4 mask as the previous mask
ORACLE_GAIN = "oracle_gain"  # oracle_miou - mIoU@1
CLICK_USE_METRICS = (
    CLICK_GAIN,
    CLICK_GAIN_LO,
    CLICK_GAIN_HI,
    NEG_CLICK_DELTA,
    POS_CLICK_DELTA,
    HARMFUL_CLICKS,
    ORACLE_MIOU,
    ORACLE_GAIN,
)
UPSAMPLED = "upsampled"  # share of objects evaluated at a ts above their native size


def interval(name: str) -> tuple[str, str]:
    """The names of the 95% interval recorded beside ``name``: (``<name>_lo``, ``<name>_hi``)."""
    return f"{name}_lo", f"{name}_hi"


# -- cost: the warm fixed-input benchmark (hrsam.profiling.measure, what papers report) ----------

ENCODER_MS = "encoder_ms"
ENCODER_MS_IQR = "encoder_ms_iqr"
DECODER_MS = "decoder_ms"
SAT_S = "sat_s"
PEAK_MEM_MB = "peak_mem_mb"
BENCH_METRICS = (ENCODER_MS, ENCODER_MS_IQR, DECODER_MS, SAT_S, PEAK_MEM_MB)
PARAMS = "params"  # parameter count of the model
GFLOPS = "gflops"  # the encoder's GFLOPs at the benchmark's ts

# ... and the per-object timings of the interactive evaluation (cold per image, real prompts)
EVAL_PREFIX = "eval_"
EVAL_ENCODER_MS, EVAL_DECODER_MS = "eval_encoder_ms", "eval_decoder_ms"
EVAL_PEAK_MEM_MB = "eval_peak_mem_mb"
SPC_S = "spc_s"  # seconds per click over the whole evaluation
EVAL_TIMINGS = (EVAL_ENCODER_MS, EVAL_DECODER_MS, EVAL_PEAK_MEM_MB, SPC_S)


def eval_timing(name: str) -> str:
    """The record name of an evaluation timing: ``encoder_ms`` -> ``eval_encoder_ms``;
    ``spc_s`` exists only there and keeps its name."""
    return EVAL_PREFIX + name if name in (ENCODER_MS, DECODER_MS, PEAK_MEM_MB) else name


# -- training ------------------------------------------------------------------------------------

TRAIN_LOSS = "train_loss"
TRAIN_S = "train_s"
BASE_TRAIN_S = "base_train_s"
BASE_STEPS = "base_steps"  # steps of the shared base training a trial finetuned from
BASE_FRESH_TENSORS = "base_fresh_tensors"  # tensors the base could not initialize
BASE_SHA256 = "base_sha256"  # the pretrained weights a trial finetuned from (a fact, not a metric)
TRAIN_METRICS = (TRAIN_S, TRAIN_LOSS, BASE_TRAIN_S, BASE_STEPS, BASE_FRESH_TENSORS)
LR = "lr"
EVAL_OBJECTS_DONE = "eval_objects_done"  # live progress series of a running trial
SERIES = (MIOU_SERIES, TRAIN_LOSS, LR, EVAL_OBJECTS_DONE)  # MLflow step series of a trial

# What each timing means, for table notes and axis captions (the evaluation protocol's latency
# conventions).
TIMING_PROTOCOL = {
    ENCODER_MS: "image encoder once per image at bench.ts, warm, median of bench.reps",
    DECODER_MS: "prompt encoder + mask decoder per click, warm, median",
    SAT_S: "one encoder pass plus a bench.sat_points^2 grid of single-click decodes",
    PEAK_MEM_MB: "peak memory of the warm benchmark",
    EVAL_ENCODER_MS: "encoder per object during the interactive evaluation (median)",
    EVAL_DECODER_MS: "decoder per click during the interactive evaluation (median)",
    EVAL_PEAK_MEM_MB: "peak memory over the whole interactive evaluation",
    SPC_S: "seconds per click over the interactive evaluation (encoder + decoders)",
}


# every fixed metric name a trial records (with `miou_at` for each k in `MIOU_CLICKS`)
METRICS = frozenset(
    [
        *QUALITY_METRICS,
        *(miou_at(k) for k in MIOU_CLICKS),
        *CLICK_USE_METRICS,
        UPSAMPLED,
        *BENCH_METRICS,
        PARAMS,
        GFLOPS,
        *EVAL_TIMINGS,
        *TRAIN_METRICS,
    ]
)


def declared(name: str) -> bool:
    """Whether ``name`` is a metric declared here (mIoU@k for any k)."""
    return name in METRICS or (clicks_of(name) is not None and not name.startswith("miou@"))


# -- MLflow: tags and parameter prefixes (ablations.record writes them, the reports read them) --

# MLflow tags
ROLE = "hrsam.role"
SWEEP_ID = "hrsam.sweep_id"
TRIAL_ID = "hrsam.trial_id"
GRID = "hrsam.grid"
LABEL = "hrsam.label"
VARYING = "hrsam.varying"
STATUS = "hrsam.status"
ERROR = "hrsam.error"  # the last line of the traceback, or the unsupported reason
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # the run's description in the UI: the sweep's command line
TRY = "hrsam.try"  # a finished trial's run: the command that opens it in the app (hrsam.app)
# MLflow >= 3 shows an experiment without a kind as a GenAI one (traces, not runs)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# the tags above as the reports' column names
TAG_COLUMNS = {
    ROLE: "role",
    TRIAL_ID: "trial_id",
    SWEEP_ID: "sweep_id",
    GRID: "grid",
    VARYING: "varying",
    LABEL: "label",
    STATUS: "trial_status",
    ERROR: "error",
    PARENT: "parent",
    RUN_NAME: "run_name",
    # provenance tags the reports show beside timings (`ablations.trial.provenance`)
    "device_name": "device_name",
    "precision": "precision",
    "threads": "threads",
    "timing_shared": "timing_shared",
}
REQUESTED = "requested."  # param prefix: the value asked for where the job resolved another
