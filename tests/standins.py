"""Model stand-ins for geometry and protocol tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GroundTruthStandIn:
    """ "Encodes" the image itself and decodes +-10 logits where it is bright, so an image that is
    the object painted white decodes to the ground truth at model resolution (ts / 4).

    Args:
        empty: decode nothing (-10 everywhere) instead.
    """

    def __init__(self, empty: bool = False) -> None:
        self.empty = empty

    def parameters(self):
        return iter([torch.zeros(1)])

    def normalize(self, x):
        return x / 255.0

    def encode(self, x):
        return x

    def decode(self, emb, points, labels, prev_logits=None, multimask=False):
        low = F.interpolate(emb[:, :1], scale_factor=0.25, mode="bilinear", align_corners=False)
        return (torch.full_like(low, -10.0) if self.empty else (low - 0.5) * 20), None


def write_package(root, files: dict[str, str]) -> None:
    """Writes a stand-in package under ``root`` (put on sys.path by the test): ``files`` maps
    relative paths (``xformers/ops/__init__.py``) to their source."""
    from pathlib import Path

    for rel, source in files.items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


# An xformers that imports and whose kernels fail at call time, as a wheel built for another
# torch / CUDA does.
BROKEN_XFORMERS = {
    "xformers/__init__.py": "",
    "xformers/ops/__init__.py": (
        "def memory_efficient_attention(*args, **kwargs):\n"
        "    raise RuntimeError('CUDA error: no kernel image is available for execution "
        "on the device')\n"
    ),
}
# A flash-attn whose compiled extension does not load (an ABI mismatch with the installed torch).
BROKEN_FLASH_ATTN = {
    "flash_attn/__init__.py": (
        "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n"
    ),
}
# mamba-ssm installed by a plain `pip install mamba-ssm`: no selective_scan_cuda extension.
MAMBA_WITHOUT_CUDA_BUILD = {
    "mamba_ssm/__init__.py": "",
    "mamba_ssm/ops/__init__.py": "",
    "mamba_ssm/ops/selective_scan_interface.py": "import selective_scan_cuda  # noqa\n",
}
