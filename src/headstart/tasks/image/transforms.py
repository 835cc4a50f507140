"""Preprocessing bound to a BackboneSpec: the same function at train, evaluate and predict time.

Decoding (``decode``, ``to_rgb``, intensity windowing) lives in ``decode.py``, free of torch, so that the
ONNX engine reads images exactly as training does; this module adds the torchvision transforms.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from headstart.core.backbones.spec import BackboneSpec
from headstart.tasks.flips import DEFAULT, Flips
from headstart.tasks.image.decode import (  # noqa: F401 - the decoding API, used through this module too
    FEW_LEVELS,
    INTENSITY_MODES,
    LOW_RANGE,
    WINDOW_PERCENTILES,
    bit_depth,
    decode,
    intensity_issue,
    open_image,
    resize,
    to_rgb,
)


def _normalize(spec: BackboneSpec) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))]


def eval_transform(spec: BackboneSpec) -> v2.Compose:
    """Center crop of an image already decoded with ``decode(..., spec.resize_size)``."""
    return v2.Compose([v2.CenterCrop(spec.input_size), *_normalize(spec)])


def train_transform(spec: BackboneSpec, augment: str = "standard", flips: Flips = DEFAULT) -> v2.Compose:
    """Random crops and ``flips`` (``standard`` adds colour jitter); ``none`` is the eval transform."""
    if augment == "none":
        return eval_transform(spec)
    steps = [v2.RandomResizedCrop(spec.input_size, scale=(0.35, 1.0), antialias=True), *flips.steps()]
    if augment == "standard":
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2))
    return v2.Compose([*steps, *_normalize(spec)])


def describe(transform: v2.Compose) -> str:
    """A stable text of a transform pipeline (part of feature-cache keys)."""
    return repr(transform).replace("\n", " ")
