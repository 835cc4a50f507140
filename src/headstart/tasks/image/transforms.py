"""Preprocessing bound to a BackboneSpec: the same function at train, evaluate and predict time."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from headstart.core.backbones.spec import BackboneSpec

_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def decode(data: bytes | Path, short_side: int, interpolation: str) -> Image.Image:
    """Decode an image file (EXIF-rotated, RGB) and resize its shorter side to ``short_side``.

    Raises whatever PIL raises for unreadable or truncated files.
    """
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    if image.format == "JPEG":  # decode at a reduced scale when the photo is much larger
        image.draft("RGB", (2 * short_side, 2 * short_side))
    image.load()
    image = ImageOps.exif_transpose(image).convert("RGB")
    w, h = image.size
    scale = short_side / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, _INTERPOLATION.get(interpolation, Image.Resampling.BILINEAR), reducing_gap=3.0)


def _normalize(spec: BackboneSpec) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))]


def eval_transform(spec: BackboneSpec) -> v2.Compose:
    """Center crop of an image already decoded with ``decode(..., spec.resize_size)``."""
    return v2.Compose([v2.CenterCrop(spec.input_size), *_normalize(spec)])


def train_transform(spec: BackboneSpec, augment: str = "standard") -> v2.Compose:
    """Random crops and flips (``standard`` adds colour jitter); ``none`` is the eval transform."""
    if augment == "none":
        return eval_transform(spec)
    steps = [
        v2.RandomResizedCrop(spec.input_size, scale=(0.35, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "standard":
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2))
    return v2.Compose([*steps, *_normalize(spec)])


def describe(transform: v2.Compose) -> str:
    """A stable text of a transform pipeline (part of feature-cache keys)."""
    return repr(transform).replace("\n", " ")
