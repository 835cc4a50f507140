"""torchvision classification models as backbones (``tv:NAME[.WEIGHTS]``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from headstart.backbones.base import Backbone, chain, count_params, probe_feature_dim, sequential
from headstart.errors import WeightsNotFoundError
from headstart.spec import BackboneSpec


def list_names() -> list[str]:
    """All torchvision classification architectures."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def weights_enum(arch: str, tag: str | None) -> torchvision.models.WeightsEnum:
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"torchvision has no classification model '{arch}'. Known: see 'headstart models tv:*'") from exc
    tag = tag or "DEFAULT"
    try:
        return enum[tag]
    except KeyError as exc:
        raise ValueError(
            f"torchvision model '{arch}' has no weights '{tag}'; expected one of {['DEFAULT', *enum.__members__]}"
        ) from exc


def cache_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision's own hub cache keeps this weight file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _stage_layout(model: nn.Module) -> tuple[list, object]:
    """Ordered (name, prefixes, fn) stages and the pooling function for known model families."""
    if hasattr(model, "layer4") and hasattr(model, "fc"):  # ResNet, ResNeXt, Wide ResNet
        model.fc = nn.Identity()
        stem = chain(model, "conv1", "bn1", "relu", "maxpool")
        stages = [("stem", ["conv1", "bn1"], stem)]
        stages += [(f"layer{i}", [f"layer{i}"], getattr(model, f"layer{i}")) for i in range(1, 5)]
        return stages, lambda x: torch.flatten(model.avgpool(x), 1)
    if hasattr(model, "encoder") and hasattr(model, "conv_proj"):  # Vision Transformer
        named_layers = list(model.encoder.layers.named_children())
        layers = [m for _, m in named_layers]

        def embed(x: torch.Tensor) -> torch.Tensor:
            x = model._process_input(x)
            cls = model.class_token.expand(x.shape[0], -1, -1)
            return model.encoder.dropout(torch.cat([cls, x], dim=1) + model.encoder.pos_embedding)

        stages = [("embed", ["conv_proj", "class_token", "encoder.pos_embedding"], embed)]
        stages += [(f"block{i}", [f"encoder.layers.{n}"], m) for i, (n, m) in enumerate(named_layers)]
        stages[-1] = (stages[-1][0], [*stages[-1][1], "encoder.ln"], sequential(layers[-1], model.encoder.ln))
        return stages, lambda x: x[:, 0]
    if hasattr(model, "features") and isinstance(model.features, nn.Sequential):
        return _features_layout(model)
    raise ValueError(
        f"torchvision architecture {type(model).__name__} has no known stage layout; "
        "use a ResNet, VGG, MobileNet, EfficientNet, ConvNeXt, RegNet-free 'features' model or ViT, "
        "or the same model through 'timm:'"
    )


def _features_layout(model: nn.Module) -> tuple[list, object]:
    """Models with a ``features`` Sequential (MobileNet, EfficientNet, VGG, ConvNeXt, ...)."""
    children = list(model.features.named_children())
    if any(isinstance(m, nn.MaxPool2d) for _, m in children):  # VGG: one group per pooling block
        blocks, current = [], []
        for name, m in children:
            current.append((name, m))
            if isinstance(m, nn.MaxPool2d):
                blocks.append(current)
                current = []
        if current:
            blocks.append(current)
    else:  # consecutive blocks with the same output width form one group
        blocks, width, x = [], None, torch.zeros(1, 3, 64, 64)
        with torch.no_grad():
            was = model.training
            model.eval()
            for name, m in children:
                x = m(x)
                if x.shape[1] != width:
                    blocks.append([])
                    width = x.shape[1]
                blocks[-1].append((name, m))
            model.train(was)
    stages = [
        (f"features{block[0][0]}", [f"features.{n}" for n, _ in block], chain(model.features, *[n for n, _ in block]))
        for block in blocks
    ]
    stages[0] = ("stem", *stages[0][1:])
    head_layers: list[nn.Module] = []
    if isinstance(getattr(model, "classifier", None), nn.Sequential):
        head_layers = list(model.classifier)[:-1]
        model.classifier[-1] = nn.Identity()
        stages[-1] = (stages[-1][0], [*stages[-1][1], "classifier"], stages[-1][2])
    avgpool = getattr(model, "avgpool", None)

    def pool(x: torch.Tensor) -> torch.Tensor:
        x = avgpool(x) if avgpool is not None else F.adaptive_avg_pool2d(x, 1)
        for layer in head_layers:
            if isinstance(layer, nn.Linear) and x.ndim > 2:
                x = torch.flatten(x, 1)
            x = layer(x)
        return torch.flatten(x, 1)

    return stages, pool


def build(arch: str, spec: BackboneSpec) -> Backbone:
    """A randomly initialised torchvision model, classifier removed, as a Backbone."""
    model = torchvision.models.get_model(arch, weights=None)
    stages, pool = _stage_layout(model)
    spec.num_params = count_params(model)
    spec.feature_dim = probe_feature_dim(model, lambda x: pool(sequential(*[s[2] for s in stages])(x)), spec.input_size)
    return Backbone(model, stages, pool, spec)


def spec_from_weights(name: str, arch: str, weights: torchvision.models.WeightsEnum | None) -> BackboneSpec:
    spec = BackboneSpec(name=name, source="tv", arch=arch, weights=str(weights) if weights else None)
    if weights is not None:
        t = weights.transforms()
        spec.input_size, spec.resize_size = int(t.crop_size[0]), int(t.resize_size[0])
        spec.mean, spec.std = tuple(t.mean), tuple(t.std)
        spec.interpolation = t.interpolation.value
        spec.extra["categories"] = len(weights.meta.get("categories", []))
    return spec


def load_weights(weights: torchvision.models.WeightsEnum, offline_reason: str | None) -> dict:
    """The weights' state dict from torchvision's cache, downloading when the hub is reachable."""
    path = cache_path(weights)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    if offline_reason:
        raise WeightsNotFoundError(
            f"Weights {weights} are not in torchvision's cache: looked for {path}. {offline_reason}. "
            f"Download {weights.url} into {path.parent} (or set TORCH_HOME), or pass a local file with --weights."
        )
    return weights.get_state_dict(progress=True, check_hash=True)
