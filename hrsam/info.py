"""What runs here: ``python -m hrsam.info [device=cuda] [json=true]`` (and ``make info``).

Like ``python -m xformers.info``: torch, CUDA and the devices; every attention kernel (in fp32 and
bf16) and scan backend with its probed status on the device (``ok``, ``not installed``,
``broken``, ``unsupported``: `hrsam.probe`), the reason and the install hint; the scan backend
each device would pick by default. Trials record `summary` as provenance (``environment``).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys

import torch

OK, NOT_INSTALLED, BROKEN, UNSUPPORTED = "ok", "not installed", "broken", "unsupported"
PACKAGES = ("torch", "xformers", "flash-attn", "mamba-ssm", "triton")
HINTS = {
    "flex": "needs torch >= 2.5 (backward on CUDA only)",
    "xformers": "pip install --no-deps xformers==<the release built for your torch> "
    "(requirements-gpu.txt)",
    "flash": "pip install --no-deps --no-build-isolation flash-attn (requirements-gpu.txt)",
    "mamba_ssm": "MAMBA_KEEP_CUDA_BUILD=TRUE pip install --no-deps --no-build-isolation "
    "--no-binary mamba-ssm mamba-ssm (requirements-gpu.txt)",
    "cpu": "needs a C compiler with OpenMP (gcc); set CC to choose one",
}


def status_of(reasons: list[str]) -> str:
    """ok / not installed / broken / unsupported, from a support() reason list."""
    if not reasons:
        return OK
    if any("installed but broken" in r for r in reasons):
        return BROKEN
    if any("is not installed" in r for r in reasons):
        return NOT_INSTALLED
    return UNSUPPORTED


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def report(device: str | None = None) -> dict:
    """Everything `main` prints, as a dict (``json=true`` prints it)."""
    from hrsam.attention import get_kernel, list_kernels
    from hrsam.ssm.scan import default_scan, get_scan, list_scans

    device = device or default_device()
    cuda = torch.cuda.is_available()
    gpus = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gb": round(p.total_memory / 2**30, 1),
            }
        )
    kernels = []
    for name in list_kernels():
        for dt in ("fp32", "bf16"):
            dtype = torch.float32 if dt == "fp32" else torch.bfloat16
            reasons = get_kernel(name).support(device, dtype)
            kernels.append(_row(name, device, dt, reasons))
    scans = [_row(n, device, "fp32", get_scan(n).support(device)) for n in list_scans()]
    return {
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpus": gpus,
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "device": device,
        "kernels": kernels,
        "scans": scans,
        "default_scan": {d: default_scan(d) for d in ("cpu", "cuda")},
        "default_kernel": "sdpa (every preset's; math for SAM presets)",
    }


def _row(name: str, device: str, precision: str, reasons: list[str]) -> dict:
    status = status_of(reasons)
    return {
        "name": name,
        "device": device,
        "precision": precision,
        "status": status,
        "reason": "; ".join(reasons),
        "hint": HINTS.get(name, "") if status in (NOT_INSTALLED, BROKEN) else "",
    }


def summary(device: str | torch.device | None = None) -> str:
    """One line for a trial's provenance: torch, CUDA, the device, what runs there."""
    from hrsam.attention import get_kernel, list_kernels
    from hrsam.ssm.scan import default_scan, get_scan, list_scans

    device = str(device or default_device())
    kind = torch.device(device).type
    name = (
        torch.cuda.get_device_name(device) if kind == "cuda" and torch.cuda.is_available() else ""
    )
    ok_fp32 = [k for k in list_kernels() if not get_kernel(k).support(device, torch.float32)]
    ok_bf16 = [k for k in list_kernels() if not get_kernel(k).support(device, torch.bfloat16)]
    scans = [s for s in list_scans() if not get_scan(s).support(device)]
    return (
        f"torch {torch.__version__}; cuda {torch.version.cuda or 'none'}; "
        f"device {device}{' (' + name + ')' if name else ''}; "
        f"kernels fp32 {','.join(ok_fp32) or '-'}; kernels bf16 {','.join(ok_bf16) or '-'}; "
        f"scans {','.join(scans) or '-'}; default scan {default_scan(device)}"
    )


def format_report(r: dict) -> str:
    lines = [
        f"python {r['python']}",
        *(f"{p:<11} {v or 'not installed'}" for p, v in r["packages"].items()),
        f"torch CUDA  {r['torch_cuda'] or 'none (CPU build)'}"
        + (f", cuDNN {r['cudnn']}" if r["cudnn"] else ""),
        f"CUDA        {'available' if r['cuda_available'] else 'not available'}",
        *(
            f"  cuda:{g['index']} {g['name']} (sm {g['capability']}, {g['memory_gb']} GB)"
            for g in r["gpus"]
        ),
        f"TF32        {'on' if r['tf32'] else 'off'}",
        "",
        f"attention kernels on {r['device']}:",
        _table(r["kernels"], with_precision=True),
        "",
        f"scan backends on {r['device']}:",
        _table(r["scans"], with_precision=False),
        "",
        f"default scan: cpu -> {r['default_scan']['cpu']}, cuda -> {r['default_scan']['cuda']}"
        " (ref only when asked for)",
        f"default kernel: {r['default_kernel']}",
    ]
    return "\n".join(lines)


def _table(rows: list[dict], with_precision: bool) -> str:
    out = []
    for row in rows:
        head = f"  {row['name']:<10}" + (f" {row['precision']:<5}" if with_precision else "")
        line = f"{head} {row['status']:<14} {row['reason']}"
        if row["hint"]:
            line += f"\n  {'':<{len(head) - 2}} install: {row['hint']}"
        out.append(line.rstrip())
    return "\n".join(out)


KEYS = {
    "device": (str, "device to probe (default: cuda if available, else cpu)"),
    "json": (bool, "print the report as JSON"),
}


def main(argv: list[str] | None = None) -> int:
    from hrsam import cli

    def run(cfg: dict) -> int:
        device = cfg.get("device")
        if device is not None:
            try:
                kind = torch.device(device).type
            except RuntimeError:
                kind = None
            if kind not in ("cpu", "cuda"):
                raise cli.UsageError(f"device={device!r} must be cpu, cuda or cuda:<index>")
        r = report(device)
        print(json.dumps(r, indent=2) if cfg["json"] else format_report(r))
        return 0

    return cli.main(argv, __doc__, KEYS, {"json": False}, run)


if __name__ == "__main__":
    sys.exit(main())
