"""Shared test set-up: CPU first; one thread per pytest-xdist worker; GPU tests skip with a reason;
eager FlexAttention by default; kernel and scan probes fresh for every test; the browser tests on
the system Chromium (pytest-playwright), a failed one keeping its trace."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

# Compiling FlexAttention takes 5-30 s per shape on CPU; the matrix tests run it eagerly and one
# marked test covers the compiled path.
os.environ.setdefault("HRSAM_FLEX_COMPILE", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker, and the processes its tests
    # start, computes on one thread, and an OpenMP thread waiting for work sleeps instead of
    # spinning on a core another worker needs (spinning pools on shared cores run 10-20x slower)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _fresh_probes():
    """Every test finds the kernel and scan probes unasked: a probe result one test caused (a
    monkeypatched backend, a model built on the meta device) never reaches the next."""
    from hrsam import probe

    probe.clear_cache()
    yield
    probe.clear_cache()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- the browser tests: pytest-playwright's fixtures (page, context, browser) on the system Chromium

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


def pytest_configure(config):
    """A failed browser test keeps its Playwright trace and a screenshot (under its tmp_path, see
    ``output_path``) unless the command line says otherwise (--tracing, --screenshot)."""
    given = " ".join(map(str, config.invocation_params.args))
    if getattr(config.option, "tracing", None) == "off" and "--tracing" not in given:
        config.option.tracing = "retain-on-failure"
    if getattr(config.option, "screenshot", None) == "off" and "--screenshot" not in given:
        config.option.screenshot = "only-on-failure"
    # pytest-playwright's stand-in for pytest-base-url (a fixture on an instance): not ours
    config.addinivalue_line(
        "filterwarnings", "ignore:Session-scoped fixtures defined as instance methods"
    )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """The system Chromium (Debian's package), never a browser downloaded by `playwright install`;
    the browser tests skip without one."""
    if CHROMIUM is None:
        pytest.skip("needs Chromium on PATH (Debian: apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--disable-dev-shm-usage"]}  # fmt: skip


@pytest.fixture
def output_path(tmp_path) -> str:
    """Where pytest-playwright leaves a failed test's trace.zip and test-failed-1.png: the test's
    own tmp_path (kept by pytest), not ./test-results."""
    return str(tmp_path / "playwright")


@pytest.fixture
def page(page):
    """pytest-playwright's page; waits as long as a first click's encoder on 2 busy cores."""
    page.set_default_timeout(120_000)
    return page
