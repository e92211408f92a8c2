"""Shared test set-up: CPU first; GPU tests skip with a reason; eager FlexAttention by default."""

from __future__ import annotations

import os

import pytest
import torch

# Compiling FlexAttention takes 5-30 s per shape on CPU; the matrix tests run it eagerly and one
# marked test covers the compiled path.
os.environ.setdefault("HRSAM_FLEX_COMPILE", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
