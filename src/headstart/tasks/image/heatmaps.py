"""Where an image classifier looked: Grad-CAM heat maps (Selvaraju et al., 2017).

A class's heat map weighs the channels of the backbone's last spatial map by the mean gradient of the class's
logit over them, keeps the positive sum, and is scaled to the image. It is computed on the backbone's stages (the
same cut that freezing and the feature cache use), so it works for every image backbone headstart builds:

- convolutional maps ``(batch, channels, height, width)`` (ResNet, EfficientNet, ConvNeXt, Swin's stages made
  channels-first...);
- transformer tokens ``(batch, tokens, channels)`` whose patch tokens make a square grid after the class and register
  tokens (ViT, DeiT, BEiT, EVA).

The map used is the later of the last two stages' outputs whose gradient reaches more than one position: a ViT pooled
on its class token gets no gradient through the last block's patch tokens, so its map is the input of that block (as
pytorch-grad-cam's ViT recipe does). The stages before run without a graph, and the backward pass stops at those two:
a heat map costs little more than a prediction. The libraries (captum's ``LayerGradCam``, torchcam) take
channels-first maps of a layer named by hand; this module finds the map on its own and reads tokens too. Where both
apply, its maps are captum's (tested).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from PIL import Image

from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import ConfigError
from headstart.tasks.classification.model import TransferClassifier, head_logits

ALPHA = 0.5  # how much of the colour map covers the image where the heat is highest
MAX_PREFIX_TOKENS = 16  # class and register tokens before a transformer's patch tokens
CANDIDATE_STAGES = 2  # the last stages whose outputs may be weighed: a CNN's last, a class-token ViT's last input


def _grid(h: torch.Tensor) -> torch.Tensor | None:
    """``h`` as a channels-first spatial map ``(batch, channels, height, width)``; None when it is not one."""
    if h.ndim == 4 and h.shape[2] * h.shape[3] > 1:
        return h
    if h.ndim == 3:
        tokens = h.shape[1]
        for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 4) + 1):  # the fewest prefix tokens leaving a square
            side = math.isqrt(tokens - prefix)
            if side > 1 and side * side == tokens - prefix:
                return h[:, prefix:].reshape(h.shape[0], side, side, h.shape[2]).permute(0, 3, 1, 2)
    return None


class Explained(NamedTuple):
    """What one pass gives: the heat maps and the model's ordinary outputs (no second pass to predict)."""

    heat: torch.Tensor  # (batch, H, W) in [0, 1], on the CPU
    logits: torch.Tensor  # (batch, classes)
    features: torch.Tensor  # (batch, feature_dim): the head's input
    stage: int  # the backbone stage whose output map was weighed


def grad_cam(model: TransferClassifier, x: torch.Tensor, targets: torch.Tensor | None = None) -> Explained:
    """The heat maps of a batch of model inputs ``x`` (B, 3, H, W), with the logits and features of the same pass.

    ``targets``: the class explained per image (default: the highest logit, the predicted class). An image whose
    map has no positive evidence for the class gets a heat map of zeros.
    """
    was_training = model.training
    model.eval()
    backbone = model.backbone
    first = max(0, backbone.num_groups - CANDIDATE_STAGES)
    try:
        with torch.no_grad():  # the stages before the candidates keep no activations for a backward pass
            h = x
            for i in range(first):
                h = backbone.run_stage(i, h)
        with torch.enable_grad():
            h = h.detach().requires_grad_(True)  # a graph through a frozen backbone too
            maps: list[tuple[int, torch.Tensor]] = []
            for i in range(first, backbone.num_groups):
                h = backbone.run_stage(i, h)
                maps.append((i, h))
            features = backbone.pool(h)
            logits = head_logits(model.head, features)  # as predict's: fp32
            chosen = logits.argmax(dim=1) if targets is None else targets.to(logits.device)
            score = logits.gather(1, chosen[:, None]).sum()
            kept = [(i, m) for i, m in maps if _grid(m) is not None]
            if not kept:
                raise ConfigError(f"{backbone.spec.name} gives no spatial map to explain (its last stages' outputs "
                                  f"{[tuple(m.shape[1:]) for _, m in maps]})")
            grads = torch.autograd.grad(score, [m for _, m in kept], allow_unused=True)  # back to these stages only
    finally:
        model.train(was_training)
    reaching = []  # (stage, map, its gradient) where the score depends on more than one place of every image
    for (i, m), g in zip(kept, grads):
        grad = _grid(g) if g is not None else None
        if grad is not None and bool(((grad.abs().sum(dim=1) > 0).flatten(1).sum(dim=1) > 1).all()):
            reaching.append((i, _grid(m.detach()), grad))
    if not reaching:
        raise ConfigError(f"the class score of {backbone.spec.name} reaches no spatial map of its stages: no heat map")
    stage, grid, grad = reaching[-1]  # the latest map the score depends on at more than one place
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * grid.float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return Explained((cam / peak).cpu(), logits.detach(), features.detach(), stage)


def shown_image(x: torch.Tensor, spec: BackboneSpec) -> np.ndarray:
    """A model input (3, H, W), normalised as ``spec`` says, back to the RGB picture the model saw (uint8)."""
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    rgb = (x.detach().float().cpu() * std + mean).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: torch.Tensor) -> Image.Image:
    """The heat map in the 'jet' colours over ``image`` (H, W, 3 uint8), more opaque where the heat is higher."""
    from matplotlib import colormaps

    h = heat.numpy().clip(0, 1)
    colour = colormaps["jet"](h)[..., :3] * 255
    alpha = (ALPHA * (0.25 + 0.75 * h))[..., None]
    return Image.fromarray((image * (1 - alpha) + colour * alpha).round().astype(np.uint8))


def save(image: np.ndarray, heat: torch.Tensor, path: Path) -> Path:
    """``path`` (a PNG): the image the model saw with its heat map over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, heat).save(path)
    return path


def png(image: np.ndarray, heat: torch.Tensor, size: int) -> bytes:
    """The overlay as PNG bytes, at most ``size`` pixels a side (a report's thumbnail)."""
    shown = overlay(image, heat)
    shown.thumbnail((size, size))
    buf = io.BytesIO()
    shown.save(buf, format="PNG")
    return buf.getvalue()
