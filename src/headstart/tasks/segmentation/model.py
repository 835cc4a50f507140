"""Segmentation models: a light FPN decoder on any registry backbone's stages, or torchvision's models by name.

Layer groups: the backbone's own groups (stem .. last stage), then the ``decoder`` and the ``classifier``;
``model.backbone`` and ``model.head`` are what ``headstart.core.strategies`` freezes and gives learning rates
to, exactly as for classifiers and detectors.

``FPNSegmenter`` takes the last stage of each stride 8, 16 and 32 of the backbone (the detection task's
``MultiScaleFeatures`` and ``pick_levels``), a 1x1 lateral conv on each, a top-down sum, a 3x3 conv and a
1x1 classifier at stride 8, upsampled bilinearly to the input. Its frozen stages can be served from the
feature cache: ``forward(flat, start=cut, size=(H, W))`` unflattens the cached maps and runs from the cut on.
``tv:NAME`` builds torchvision's segmentation model NAME (``deeplabv3_mobilenet_v3_large``,
``lraspp_mobilenet_v3_large``, ``fcn_resnet50``...) with its pretrained weights and a new classifier for the
user's classes; its backbone's children are the layer groups (no feature cache).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from headstart import hub
from headstart.core.backbones import registry, torchvision_models
from headstart.core.backbones.base import Backbone
from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import ConfigError, WeightsNotFoundError
from headstart.tasks.detection.model import MultiScaleFeatures, pick_levels

TV_SEGMENTERS = ("deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50", "fcn_resnet101",
                 "deeplabv3_resnet50", "deeplabv3_resnet101")


class FPNDecoder(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling and sum, then a 3x3 conv + BatchNorm + ReLU (finest stride)."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in in_channels])
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, maps: OrderedDict[str, torch.Tensor]) -> torch.Tensor:
        feats = list(maps.values())  # finest first
        x = self.lateral[-1](feats[-1])
        for lateral, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            x = lateral(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        return self.fuse(x)


class SegmentationModel(nn.Module):
    """Base of both kinds: ``backbone`` (layer groups), ``head`` (what is new) and per-pixel logits."""

    info: dict[str, Any]

    @property
    def backbone(self) -> Backbone:
        raise NotImplementedError

    @property
    def cacheable(self) -> bool:
        """Whether frozen stages can be served from the feature cache."""
        return False

    def logits(self, x: torch.Tensor, start: int = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self(x, start=start, size=size)


class FPNSegmenter(SegmentationModel):
    """A registry backbone's stride-8/16/32 stages -> ``FPNDecoder`` -> 1x1 classifier -> bilinear upsampling."""

    def __init__(self, backbone: Backbone, num_classes: int, channels: int = 64, size: int = 256) -> None:
        super().__init__()
        levels, in_channels = pick_levels(backbone, size)
        self.features = MultiScaleFeatures(backbone, levels, FPNDecoder(in_channels, channels), channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.info = {"kind": "fpn", "levels": levels, "channels": channels}
        self._shapes: dict[tuple[int, int, int], list[tuple[int, ...]]] = {}

    @property
    def backbone(self) -> Backbone:
        return self.features.backbone

    @property
    def head(self) -> nn.ModuleDict:
        return nn.ModuleDict({"decoder": self.features.neck, "classifier": self.classifier})

    @property
    def cacheable(self) -> bool:
        return True

    def cut_for(self, frozen: int) -> int:
        """The cut when the first ``frozen`` groups are frozen: no higher than the deepest level's stage + 1."""
        return min(frozen, max(self.features.levels) + 1) if frozen > 0 else 0

    def run_frozen(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """The cached maps of normalised images ``x`` at ``cut``, flattened and concatenated per item."""
        return torch.cat([p.flatten(1) for p in self.features.run_frozen(x, cut)], dim=1)

    def cached_shapes(self, cut: int, height: int, width: int) -> list[tuple[int, ...]]:
        """Shapes (C, h, w) of the cached maps of a ``height`` x ``width`` input."""
        was = self.training
        self.eval()
        with torch.no_grad():
            outs = self.features.run_frozen(torch.zeros(1, 3, height, width), cut)
        self.train(was)
        return [tuple(o.shape[1:]) for o in outs]

    def forward(self, x: torch.Tensor, start: int = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits ``(B, classes, H, W)``: of images ``x`` (``start=0``), or of cached maps from ``start`` on
        (``x`` flattened, ``size`` the input's height and width)."""
        if start:
            if size is None:
                raise ValueError("cached features need the input size")
            key = (start, *size)
            if key not in self._shapes:  # measured once per cut and input size (train crops, validation frames)
                self._shapes[key] = self.cached_shapes(start, *size)
            shapes = self._shapes[key]
            sizes = [math.prod(s) for s in shapes]
            x = x.float()  # stored as float16; autocast casts again where it is on
            parts = [p.reshape(x.shape[0], *s).contiguous(memory_format=torch.channels_last)
                     for p, s in zip(x.split(sizes, dim=1), shapes)]
            self.features.cut, self.features.cached = start, parts
            try:
                fused = self.features(None)
            finally:
                self.features.cached = None
        else:
            size = size or tuple(x.shape[-2:])
            fused = self.features(x)
        return F.interpolate(self.classifier(fused), size=size, mode="bilinear", align_corners=False)


class TorchvisionSegmenter(SegmentationModel):
    """torchvision's segmentation model with its classifier replaced; ``backbone`` = its encoder's children."""

    def __init__(self, net: nn.Module, backbone: Backbone, new: nn.ModuleDict, info: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self._views = (backbone, new)  # a tuple: registered once, inside ``net``
        self.info = info

    @property
    def backbone(self) -> Backbone:
        return self._views[0]

    @property
    def head(self) -> nn.ModuleDict:
        return self._views[1]

    def forward(self, x: torch.Tensor, start: int = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
        out = self.net(x)["out"]
        size = size or tuple(x.shape[-2:])
        return out if tuple(out.shape[-2:]) == tuple(size) else F.interpolate(out, size=size, mode="bilinear",
                                                                               align_corners=False)


# ------------------------------------------------------------------------------------------------ building
def is_tv_segmenter(name: str) -> bool:
    return name.startswith("tv:") and name[3:].split(".")[0] in torchvision.models.list_models(
        module=torchvision.models.segmentation)


def tv_weights(name: str) -> tuple[str, torchvision.models.WeightsEnum]:
    """``(arch, weights enum member)`` of ``tv:ARCH[.WEIGHTS]``."""
    arch, _, tag = name.removeprefix("tv:").partition(".")
    enum = torchvision.models.get_model_weights(arch)
    try:
        return arch, enum[tag or "DEFAULT"]
    except KeyError:
        raise ConfigError(f"Segmentation model '{arch}' has no weights '{tag}'; expected one of "
                          f"{['DEFAULT', *enum.__members__]}") from None


def _replace_classifier(net: nn.Module, num_classes: int) -> nn.ModuleDict:
    """A new last layer for ``num_classes`` on a torchvision segmentation model; the auxiliary head dropped."""
    net.aux_classifier = None
    head = net.classifier
    if hasattr(head, "low_classifier"):  # LRASPP: two 1x1 classifiers
        head.low_classifier = nn.Conv2d(head.low_classifier.in_channels, num_classes, 1)
        head.high_classifier = nn.Conv2d(head.high_classifier.in_channels, num_classes, 1)
    elif isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Conv2d):  # DeepLabHead, FCNHead
        head[-1] = nn.Conv2d(head[-1].in_channels, num_classes, 1)
    else:
        raise ConfigError(f"Cannot replace the classifier of {type(head).__name__}")
    return nn.ModuleDict({"classifier": head})


def build_tv_segmenter(name: str, num_classes: int, pretrained: bool = True,
                       weights_file: str | None = None) -> TorchvisionSegmenter:
    """torchvision's ``tv:ARCH[.WEIGHTS]`` with its (COCO-VOC) weights and a classifier for ``num_classes``.

    The weights come from torchvision's cache (or ``weights_file``, the model's state dict); offline and absent,
    the registry's WeightsNotFoundError says where it looked and how to provide them (nothing is downloaded
    where the hub is unreachable).
    """
    arch, weights = tv_weights(name)
    net = torchvision.models.get_model(arch, weights=None, weights_backbone=None, aux_loss=None)
    if pretrained or weights_file:
        state = registry.read_state_dict(weights_file) if weights_file else \
            torchvision_models.load_weights(weights, hub.offline_reason("download.pytorch.org"))
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("aux_classifier.")]
        if missing or unexpected:
            raise WeightsNotFoundError(f"Weights {weights} do not fit {arch}: missing {missing[:3]}, "
                                       f"unexpected {unexpected[:3]}")
    new = _replace_classifier(net, num_classes)
    body = net.backbone
    stages = [(n, [n], nn.Identity()) for n, m in body.named_children() if any(True for _ in m.parameters())]
    meta = weights.transforms()
    origin = f"file:{Path(weights_file).resolve()}" if weights_file else str(weights) if pretrained else None
    spec = BackboneSpec(name=name, source="tv", arch=name, weights=origin,
                        input_size=0, resize_size=0)
    spec.mean, spec.std = tuple(meta.mean), tuple(meta.std)
    backbone = Backbone(body, stages, nn.Identity(), spec)
    return TorchvisionSegmenter(net, backbone, new, {"kind": "tv", "name": name})


def create_model(name: str, num_classes: int, pretrained: bool = True, weights_file: str | None = None,
                 channels: int = 64, size: int = 256, spec: BackboneSpec | None = None) -> SegmentationModel:
    """The configured segmenter; ``spec`` given: a saved run's architecture with random weights."""
    if is_tv_segmenter(name):
        fresh = spec is None
        return build_tv_segmenter(name, num_classes, pretrained=pretrained and fresh,
                                  weights_file=weights_file if fresh else None)
    if name.startswith("tv:") and name[3:].split(".")[0] in torchvision.models.list_models(
            module=torchvision.models.detection):
        raise ConfigError(f"'{name}' is a torchvision detector; segmentation takes a backbone or one of "
                          f"{', '.join('tv:' + n for n in TV_SEGMENTERS)}")
    if spec is not None:
        backbone = registry.rebuild(spec)
        backbone.spec = spec
    else:
        backbone = registry.create_backbone(name, pretrained, weights_file)
    if backbone.spec.modality != "image":
        raise ConfigError(f"Model '{name}' is a {backbone.spec.modality} encoder; segmentation needs an image backbone")
    return FPNSegmenter(backbone, num_classes, channels, size)
