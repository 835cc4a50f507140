"""timm models as backbones (``timm:NAME[.TAG]``)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from headstart.backbones.base import Backbone, chain, count_params, probe_feature_dim, sequential
from headstart.spec import BackboneSpec


def list_names(pattern: str = "*", pretrained: bool = True) -> list[str]:
    return timm.list_models(pattern, pretrained=pretrained)


def _stage_layout(model: nn.Module) -> list:
    """Ordered (name, prefixes, fn) stages for known timm families; one stage otherwise."""
    names = dict(model.named_children())
    if {"conv_stem", "bn1", "blocks"} <= names.keys():  # EfficientNet, MobileNetV2/V3, MixNet...
        stages = [("stem", ["conv_stem", "bn1"], chain(model, "conv_stem", "bn1"))]
        stages += [(f"blocks{i}", [f"blocks.{i}"], b) for i, b in enumerate(model.blocks)]
        # EfficientNet's conv_head/bn2 end forward_features; MobileNetV3 applies them after pooling.
        tail = [n for n in ("conv_head", "bn2") if isinstance(names.get(n), nn.Module)] if "bn2" in names else []
        if tail:
            stages.append(("head", tail, chain(model, *tail)))
        return stages
    if {"conv1", "bn1", "layer4"} <= names.keys():  # ResNet family
        stem = chain(model, "conv1", "bn1", "act1", "maxpool")
        return [("stem", ["conv1", "bn1"], stem)] + [
            (f"layer{i}", [f"layer{i}"], getattr(model, f"layer{i}")) for i in range(1, 5)
        ]
    if {"stem", "stages"} <= names.keys():  # ConvNeXt, RegNet-style, EfficientFormer...
        stages = [("stem", ["stem"], model.stem)]
        stages += [(f"stage{i}", [f"stages.{i}"], s) for i, s in enumerate(model.stages)]
        tail = [n for n in ("norm_pre", "final_conv") if isinstance(names.get(n), nn.Module)]
        if tail:
            last_name, last_prefixes, last_fn = stages[-1]
            stages[-1] = (last_name, [*last_prefixes, *tail], sequential(last_fn, chain(model, *tail)))
        return stages
    if {"patch_embed", "blocks", "norm"} <= names.keys() and hasattr(model, "_pos_embed"):  # ViT family

        def embed(x: torch.Tensor) -> torch.Tensor:
            x = model._pos_embed(model.patch_embed(x))
            return model.norm_pre(model.patch_drop(x))

        stages = [("embed", ["patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre"], embed)]
        stages += [(f"block{i}", [f"blocks.{i}"], b) for i, b in enumerate(model.blocks)]
        last_name, last_prefixes, last_fn = stages[-1]
        stages[-1] = (last_name, [*last_prefixes, "norm"], sequential(last_fn, model.norm))
        return stages
    return [("body", [""], model.forward_features)]


def build(arch: str, spec: BackboneSpec, pretrained: bool = False, model: nn.Module | None = None) -> Backbone:
    """A timm model (classifier removed) as a Backbone."""
    if model is None:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0)
    else:
        model.reset_classifier(0)
    stages = _stage_layout(model)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(x, pre_logits=True)

    spec.num_params = count_params(model)
    spec.feature_dim = probe_feature_dim(model, lambda x: pool(sequential(*[s[2] for s in stages])(x)), spec.input_size)
    return Backbone(model, stages, pool, spec)


def spec_from_cfg(name: str, arch: str, weights: str | None) -> BackboneSpec:
    """Preprocessing from timm's pretrained config of ``arch`` (``name.tag``)."""
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    input_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    return BackboneSpec(
        name=name,
        source="timm",
        arch=arch,
        weights=weights,
        input_size=input_size,
        resize_size=int(round(input_size / crop_pct)),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )


def hf_hub_id(arch: str) -> str | None:
    cfg = timm.get_pretrained_cfg(arch)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None
