"""Models: HRSAM / HRSAM++ backbones, SAM's image encoder, prompt encoder and mask decoder,
presets with ``build_model``, checkpoints and the ``Predictor``."""

from hrsam.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_official_hrsam,
    load_sam_checkpoint,
    remap_official_hrsam,
    save_checkpoint,
)
from hrsam.models.hrsam import HRSAMPlusPlusViT, HRSAMViT
from hrsam.models.predictor import Predictor
from hrsam.models.presets import PRESETS, ModelPreset, build_model, get_preset, list_presets
from hrsam.models.segmenter import InteractiveSegmenter

__all__ = [
    "PRESETS",
    "CheckpointError",
    "HRSAMPlusPlusViT",
    "HRSAMViT",
    "InteractiveSegmenter",
    "ModelPreset",
    "Predictor",
    "build_model",
    "get_preset",
    "list_presets",
    "load_checkpoint",
    "load_model",
    "load_official_hrsam",
    "load_sam_checkpoint",
    "remap_official_hrsam",
    "save_checkpoint",
]
