"""Detection models: torchvision detector families on any registry backbone, or COCO detectors by name.

Layer groups: the backbone's own groups (stem .. last stage), then ``neck`` (FPN) and ``heads`` (the
detector's heads); ``model.backbone`` and ``model.head`` (neck + heads) are what
``headstart.core.strategies`` freezes and gives learning rates to, exactly as for classifiers.

Families built on a registry backbone (``fcos``, ``retinanet``, ``fasterrcnn``, ``ssdlite``, ``ssd``) take
the last stage of each stride 8, 16 and 32 of the backbone into an FPN. The frozen part of such a
backbone can be served from the feature cache: ``model.features.cached`` holds the stored outputs and
the detector then runs from the cut on (its input images are only placeholders of the right size).
``tv:NAME`` builds torchvision's COCO detector NAME with its class predictor replaced.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torchvision
from torch import distributed, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.ssd import SSD, SSDClassificationHead, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteClassificationHead, SSDLiteHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from headstart import hub
from headstart.config import DetectionConfig
from headstart.core import strategies
from headstart.core.backbones import torchvision_models
from headstart.core.backbones.base import Backbone
from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import ConfigError, WeightsNotFoundError

FAMILIES = ("fcos", "retinanet", "fasterrcnn", "ssdlite", "ssd")
TV_DETECTORS = (
    "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large", "ssd300_vgg16",
)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def global_foreground(losses: dict[str, torch.Tensor], matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Losses that torchvision divided by this device's foreground anchors, divided by the whole global batch's.

    FCOS and SSD normalise their summed losses by the number of foreground anchors in the batch. On several
    devices each device saw only its part of the global batch: each loss is rescaled to
    ``devices x sum(this device) / foreground(all devices)``, so that DDP's mean of the gradients over the
    devices is the gradient of the one-device loss ``sum(all) / foreground(all)``. One device: unchanged.
    """
    if not (distributed.is_available() and distributed.is_initialized()) or distributed.get_world_size() == 1:
        return losses
    local = sum((m >= 0).sum() for m in matched_idxs).float()
    total = local.clone()
    distributed.all_reduce(total)
    scale = distributed.get_world_size() * local.clamp_min(1) / total.clamp_min(1)
    return {name: loss * scale for name, loss in losses.items()}


class GlobalFCOSHead(FCOSHead):
    """torchvision's FCOS head, its losses normalised over the foreground of all devices (``global_foreground``)."""

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor], matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return global_foreground(super().compute_loss(targets, head_outputs, anchors, matched_idxs), matched_idxs)


class GlobalSSD(SSD):
    """torchvision's SSD, its losses normalised over the foreground of all devices (``global_foreground``)."""

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor], matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return global_foreground(super().compute_loss(targets, head_outputs, anchors, matched_idxs), matched_idxs)


class MultiScaleFeatures(nn.Module):
    """Backbone stages -> the chosen levels -> FPN. Runs from cached frozen outputs when ``cached`` is set."""

    def __init__(self, backbone: Backbone, levels: list[int], neck: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.backbone, self.neck = backbone, neck
        self.levels, self.out_channels = levels, out_channels
        self.cut = 0  # first stage that runs; the outputs of ``cached_parts(cut)`` come from ``cached``
        self.cached: list[torch.Tensor] | None = None

    def cached_parts(self, cut: int) -> list[int]:
        """Stage indices whose outputs a cache at ``cut`` must hold: levels below the cut and the cut's input."""
        parts = {lv for lv in self.levels if lv < cut}
        if cut <= max(self.levels):
            parts.add(cut - 1)
        return sorted(parts)

    def run_frozen(self, x: torch.Tensor, cut: int) -> list[torch.Tensor]:
        """Outputs of ``cached_parts(cut)`` for normalised images ``x`` (what the cache stores)."""
        keep, outs = set(self.cached_parts(cut)), []
        x = x.contiguous(memory_format=torch.channels_last)
        for g in range(cut):
            x = self.backbone.run_stage(g, x)
            if g in keep:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        outs: dict[int, torch.Tensor] = {}
        if self.cached is not None:
            parts = dict(zip(self.cached_parts(self.cut), self.cached))
            outs = {lv: parts[lv] for lv in self.levels if lv < self.cut}
            start, h = self.cut, parts.get(self.cut - 1)
        else:
            start, h = 0, x.contiguous(memory_format=torch.channels_last)
        for g in range(start, max(self.levels) + 1):
            h = self.backbone.run_stage(g, h)
            if g in self.levels:
                outs[g] = h
        return self.neck(OrderedDict((str(i), outs[lv]) for i, lv in enumerate(self.levels)))


class DetectionModel(nn.Module):
    """A torchvision detector plus the views ``backbone`` (layer groups) and ``head`` (neck + heads)."""

    def __init__(self, detector: nn.Module, backbone: Backbone, neck: nn.Module | None, features: MultiScaleFeatures | None,
                 info: dict[str, Any], freeze_bn: bool) -> None:
        super().__init__()
        self.detector = detector
        self._views = (backbone, neck, features)  # a tuple: registered once, inside ``detector``
        self.info = info  # what rebuilds the architecture (saved in spec.json)
        self.freeze_bn = freeze_bn

    @property
    def backbone(self) -> Backbone:
        return self._views[0]

    @property
    def features(self) -> MultiScaleFeatures | None:
        """The cache-aware multi-scale backbone (None for ``tv:`` detectors: no feature cache)."""
        return self._views[2]

    @property
    def head(self) -> nn.ModuleDict:
        """Everything that is not the backbone: ``neck`` and ``heads`` (new for the user's classes)."""
        heads = nn.ModuleList([m for name, m in self.detector.named_children() if name not in ("backbone", "transform")])
        parts = {"heads": heads}
        if self._views[1] is not None:
            parts = {"neck": self._views[1], **parts}
        return nn.ModuleDict(parts)

    def train(self, mode: bool = True) -> DetectionModel:
        super().train(mode)
        self.backbone.train(mode)  # frozen groups keep BatchNorm/Dropout in eval mode
        if mode and self.freeze_bn:
            for m in self.backbone.body.modules():
                if _is_bn(m):
                    m.eval()
        return self

    def apply_frozen_bn(self) -> None:
        """Frozen BatchNorm: running statistics and affine parameters of the backbone stay as loaded."""
        if self.freeze_bn:
            for m in self.backbone.body.modules():
                if _is_bn(m):
                    for p in m.parameters(recurse=False):
                        p.requires_grad_(False)
        self.train(self.training)

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        return self.detector(list(images), targets)


# ---------------------------------------------------------------------------------------- building
def stage_strides(backbone: Backbone, size: int) -> list[tuple[int, int]]:
    """``(stride, channels)`` of every stage's output on a ``size`` px input."""
    was = backbone.training
    backbone.eval()
    out, x = [], torch.zeros(1, 3, size, size)
    with torch.no_grad():
        for g in range(backbone.num_groups):
            x = backbone.run_stage(g, x)
            out.append((size // x.shape[-1], int(x.shape[1])) if x.ndim == 4 else (0, 0))
    backbone.train(was)
    return out


def pick_levels(backbone: Backbone, size: int) -> tuple[list[int], list[int]]:
    """The last stage of each stride 8, 16, 32 and their channels."""
    strides = stage_strides(backbone, size)
    levels = []
    for stride in (8, 16, 32):
        found = [g for g, (s, _) in enumerate(strides) if s == stride]
        if found:
            levels.append(found[-1])
    if len(levels) < 2:
        raise ConfigError(f"Backbone {backbone.spec.name} has no stride-8/16/32 feature maps "
                          f"(stage strides {[s for s, _ in strides]}); detection needs a convolutional backbone")
    return levels, [strides[g][1] for g in levels]


def build_detector(backbone: Backbone, num_classes: int, cfg: DetectionConfig, freeze_bn: bool) -> DetectionModel:
    """Family ``cfg.family`` over ``backbone``; ``num_classes`` excludes the background (labels are 1..N)."""
    size, ch = cfg.image_size, cfg.neck_channels
    if cfg.family in ("fcos", "retinanet") and ch % 32:
        raise ConfigError(f"detection.neck_channels={ch}: {cfg.family} heads use GroupNorm with 32 groups, so the "
                          "channels must be a multiple of 32 (e.g. 32, 64, 128)")
    levels, channels = pick_levels(backbone, size)
    two_stage = cfg.family == "fasterrcnn"
    extra = LastLevelMaxPool() if two_stage else LastLevelP6P7(ch, ch)
    neck = FeaturePyramidNetwork(channels, ch, extra_blocks=extra)
    features = MultiScaleFeatures(backbone, levels, neck, ch)
    n_maps = len(levels) + (1 if two_stage else 2)
    spec = backbone.spec
    common = {"min_size": size, "max_size": size, "image_mean": list(spec.mean), "image_std": list(spec.std)}
    n = num_classes + 1
    base = [8 * 2**i for i in range(n_maps)]  # 8, 16, 32, ... px at strides 8, 16, 32, ...
    if cfg.family == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in base), ((1.0,),) * n_maps)
        head = GlobalFCOSHead(ch, 1, n, num_convs=cfg.head_convs)
        det = FCOS(features, n, anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                   nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img, topk_candidates=300, **common)
    elif cfg.family == "retinanet":
        sizes = tuple((2 * s, int(2 * s * 2 ** (1 / 3)), int(2 * s * 2 ** (2 / 3))) for s in base)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * n_maps)
        head = RetinaNetHead(ch, anchors.num_anchors_per_location()[0], n,
                             norm_layer=partial(nn.GroupNorm, min(32, ch)))
        det = RetinaNet(features, n, anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                        nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img, topk_candidates=300,
                        **common)
    elif two_stage:
        anchors = AnchorGenerator(tuple((2 * s,) for s in base), ((0.5, 1.0, 2.0),) * n_maps)
        names = [str(i) for i in range(len(levels))]
        det = FasterRCNN(
            features, num_classes=None, rpn_anchor_generator=anchors, rpn_head=RPNHead(ch, 3),
            box_roi_pool=MultiScaleRoIAlign(names, 7, 2), box_head=TwoMLPHead(ch * 49, 256),
            box_predictor=FastRCNNPredictor(256, n), rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, box_batch_size_per_image=128,
            box_score_thresh=cfg.score_thresh, box_nms_thresh=cfg.nms_thresh,
            box_detections_per_img=cfg.detections_per_img, **common)
    else:  # ssd / ssdlite over the FPN levels; the smallest default box is 5 % of the image (16 px at 320)
        ratios = [[2]] + [[2, 3]] * (n_maps - 2) + [[2]]
        scales = [0.05, 0.1, 0.2, 0.35, 0.55, 0.75, 0.95][: n_maps + 1]
        anchors = DefaultBoxGenerator(ratios, scales=scales)
        per_loc = anchors.num_anchors_per_location()
        if cfg.family == "ssdlite":
            head = SSDLiteHead([ch] * n_maps, per_loc, n, partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03))
        else:
            head = SSDHead([ch] * n_maps, per_loc, n)
        det = GlobalSSD(features, anchors, (size, size), n, image_mean=list(spec.mean), image_std=list(spec.std),
                  head=head, score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
                  detections_per_img=cfg.detections_per_img, topk_candidates=300)
    info = {"kind": "family", "family": cfg.family, "image_size": size, "neck_channels": ch,
            "head_convs": cfg.head_convs, "levels": levels}
    return DetectionModel(det, backbone, neck, features, info, freeze_bn=freeze_bn)


# ----------------------------------------------------------------------------- torchvision COCO detectors
def tv_weights(name: str) -> tuple[str, torchvision.models.WeightsEnum]:
    """``(arch, weights enum member)`` of ``tv:ARCH[.WEIGHTS]``."""
    arch, _, tag = name.removeprefix("tv:").partition(".")
    if arch not in torchvision.models.list_models(module=torchvision.models.detection):
        raise ConfigError(f"torchvision has no detector '{arch}'; expected one of {', '.join(TV_DETECTORS)}")
    enum = torchvision.models.get_model_weights(arch)
    try:
        return arch, enum[tag or "DEFAULT"]
    except KeyError:
        raise ConfigError(f"Detector '{arch}' has no weights '{tag}'; expected one of "
                          f"{['DEFAULT', *enum.__members__]}") from None


def replace_predictor(det: nn.Module, num_classes: int) -> None:
    """New class predictor for ``num_classes`` labels (background included) on a torchvision detector."""
    if isinstance(det, FasterRCNN):
        old = det.roi_heads.box_predictor
        det.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, num_classes)
    elif isinstance(det, (RetinaNet, FCOS)):
        cls_head = det.head.classification_head
        in_ch = cls_head.conv[0][0].in_channels if isinstance(cls_head.conv[0], nn.Sequential) else cls_head.conv[0].in_channels
        k = cls_head.num_anchors
        if isinstance(det, FCOS):
            det.head.classification_head = FCOSClassificationHead(in_ch, k, num_classes, num_convs=len(cls_head.conv) // 3)
        else:
            norm = partial(nn.GroupNorm, 32) if any(isinstance(m, nn.GroupNorm) for m in cls_head.conv.modules()) else None
            det.head.classification_head = RetinaNetClassificationHead(in_ch, k, num_classes, norm_layer=norm)
    elif isinstance(det, SSD):
        per_loc = det.anchor_generator.num_anchors_per_location()
        old = det.head.classification_head.module_list
        if isinstance(old[0], nn.Sequential):  # SSDlite: depthwise conv block, then a 1x1 conv
            in_ch = [m[0][0].in_channels for m in old]
            det.head.classification_head = SSDLiteClassificationHead(
                in_ch, per_loc, num_classes, partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))
        else:
            det.head.classification_head = SSDClassificationHead([m.in_channels for m in old], per_loc, num_classes)
    else:
        raise ConfigError(f"Cannot replace the class predictor of {type(det).__name__}")


def _tv_backbone(det: nn.Module, name: str, weights: str | None) -> tuple[Backbone, nn.Module | None]:
    """The detector's backbone body as layer groups (one per child with parameters) and its neck."""
    outer = det.backbone
    body = outer.body if hasattr(outer, "body") else outer.features
    body_name = "body" if hasattr(outer, "body") else "features"
    stages = [(n, [n], nn.Identity()) for n, m in body.named_children() if any(True for _ in m.parameters())]
    spec = BackboneSpec(name=name, source="tv", arch=name, weights=weights, input_size=0, resize_size=0)
    backbone = Backbone(body, stages, nn.Identity(), spec)
    rest = nn.ModuleDict({n: m for n, m in outer.named_children() if n != body_name})
    return backbone, rest if any(True for _ in rest.parameters()) else None


def build_tv_detector(name: str, num_classes: int, cfg: DetectionConfig, pretrained: bool = True,
                      freeze_bn: bool = True) -> DetectionModel:
    """torchvision's detector ``name`` (``tv:ARCH[.WEIGHTS]``), COCO weights loaded, predictor replaced."""
    arch, weights = tv_weights(name)
    det = torchvision.models.get_model(arch, weights=None, weights_backbone=None)
    if pretrained:
        state = torchvision_models.load_weights(weights, hub.offline_reason("download.pytorch.org"))
        missing, unexpected = det.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise WeightsNotFoundError(f"COCO weights {weights} do not fit {arch}: missing {missing[:3]}, "
                                       f"unexpected {unexpected[:3]}")
    replace_predictor(det, num_classes + 1)
    det.score_thresh = cfg.score_thresh
    if isinstance(det, FasterRCNN):
        det.roi_heads.score_thresh, det.roi_heads.nms_thresh = cfg.score_thresh, cfg.nms_thresh
        det.roi_heads.detections_per_img = cfg.detections_per_img
    else:
        det.nms_thresh, det.detections_per_img = cfg.nms_thresh, cfg.detections_per_img
    if not isinstance(det, SSD):  # SSD models have their fixed size; the others would upscale to 800 px
        det.transform.min_size, det.transform.max_size = (cfg.image_size,), cfg.image_size
    backbone, neck = _tv_backbone(det, name, str(weights) if pretrained else None)
    backbone.spec.mean, backbone.spec.std = tuple(det.transform.image_mean), tuple(det.transform.image_std)
    info = {"kind": "tv", "name": name, "image_size": cfg.image_size}
    return DetectionModel(det, backbone, neck, None, info, freeze_bn=freeze_bn and pretrained)


def describe(model: DetectionModel, frozen: set[int]) -> list[tuple[str, int, int, bool]]:
    """``(group, trainable params, total params, frozen)``: backbone groups, then neck and heads."""
    rows = strategies.backbone_rows(model.backbone, frozen)
    for name, module in model.head.items():
        params = list(module.parameters())
        rows.append((f"{name} (new)" if name == "heads" else name, sum(p.numel() for p in params if p.requires_grad),
                     sum(p.numel() for p in params), False))
    return rows
