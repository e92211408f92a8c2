"""Datasets: DAVIS-345, HQSeg-44K val, GrabCut, Berkeley (real layouts) and the synthetic
high-resolution generator."""

from hrsam.data.datasets import DATASETS, DataConfig, DatasetError, build_dataset, list_datasets

__all__ = ["DATASETS", "DataConfig", "DatasetError", "build_dataset", "list_datasets"]
