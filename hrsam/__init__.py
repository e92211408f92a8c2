"""hrsam: HRSAM / HRSAM++ (arXiv 2407.02109) and SAM for high-resolution interactive segmentation.

Importing this package needs torch and numpy only; optional kernels (xformers, flash-attn,
mamba-ssm) are imported lazily where they are used.
"""

__version__ = "0.1.0"
