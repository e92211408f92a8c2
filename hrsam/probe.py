"""Support probes: whether an optional kernel or scan backend really runs here (issue 18).

An import that works says little: a wheel built against another torch imports and then fails at
call time, and ``pip install mamba-ssm`` without ``MAMBA_KEEP_CUDA_BUILD=TRUE`` installs a package
whose CUDA extension is missing. So every kernel and scan backend answers ``support()`` in three
steps, and each step's failure reads differently:

1. static: "cannot run this dtype/device" (``flash-attn needs float16 or bfloat16, not ...``,
   ``xformers runs on CUDA only (device is cpu)``);
2. import: ``<package> is not installed (<install hint>)`` when the package itself is absent,
   ``<package> is installed but broken: <the library's error>`` when importing it fails;
3. a tiny real call on the target device and dtype (forward, and backward when asked): its
   exception becomes ``<package> is installed but broken: <the library's error>``.

Probe results are cached per process (`probe_call`, run outside any default device its caller
set); `clear_cache` forgets them (tests).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

GPU_HINT = "pip install -r requirements-gpu.txt"

_CACHE: dict[Hashable, str | None] = {}


def device_reasons(device) -> list[str]:
    """Why ``device`` itself is not usable on this machine (a CUDA device without CUDA)."""
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return ["CUDA is not available on this machine"]
    return []


def error_text(e: BaseException) -> str:
    """``Type: first line of the message`` (a library's multi-line error, kept to one line)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def broken(package: str, e: BaseException) -> str:
    return f"{package} is installed but broken: {error_text(e)}"


def import_reason(module: str, package: str, hint: str = GPU_HINT) -> str | None:
    """None when ``module`` imports; else why: not installed (the top-level package is absent)
    or installed but broken (anything else, e.g. a missing compiled extension of it)."""
    top = module.split(".")[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == top:
            return f"{package} is not installed ({hint})"
        return broken(package, e)
    except Exception as e:  # an ABI mismatch raises ImportError / OSError / RuntimeError
        return broken(package, e)
    return None


def probe_call(key: Hashable, package: str, fn: Callable[[], object]) -> str | None:
    """Runs ``fn()`` once per process per ``key``; None when it ran, else the broken reason.

    The call runs outside whatever default device its caller set: a model built under
    ``with torch.device("meta")`` (shapes only) resolves its kernel ``auto`` by probing, and a
    probe whose tensors landed on the meta device would fail and be cached for the whole process
    as "broken" (a later training on the CPU then ran the ``math`` reference instead of SDPA)."""
    if key not in _CACHE:
        import torch

        try:
            with torch.device("cpu"):
                fn()
            _CACHE[key] = None
        except Exception as e:
            _CACHE[key] = broken(package, e)
            log.warning("probe %s: %s", key, _CACHE[key])
    return _CACHE[key]


def support_reasons(
    static: list[str],
    module: str | None,
    package: str,
    key: Hashable,
    probe: Callable[[], object],
) -> list[str]:
    """The three steps in order: the ``static`` reasons, then whether ``module`` (when there is
    one) imports, then, only when neither ruled it out, the cached tiny call ``probe``. Empty
    when the call ran."""
    reasons = list(static)
    if module is not None:
        missing = import_reason(module, package)
        if missing:
            reasons.append(missing)
    if reasons:
        return reasons
    failed = probe_call(key, package, probe)
    return [failed] if failed else []


def clear_cache() -> None:
    """Forgets every probe result (the next support() call probes again)."""
    _CACHE.clear()
