"""torchvision classification models as backbones (``tv:NAME[.WEIGHTS]``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from headstart.core.backbones.base import Backbone, chain, channels_first, count_params, sequential
from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import WeightsNotFoundError


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


Stage = tuple[str, list[str], Callable[[torch.Tensor], torch.Tensor]]
Layout = tuple[list[Stage], Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]

SUPPORTED = ("AlexNet, VGG, ResNet/ResNeXt/Wide ResNet, DenseNet, SqueezeNet, GoogLeNet, Inception v3, MobileNet v2/v3, "
             "MNASNet, ShuffleNet v2, EfficientNet (v1, v2), RegNet, ConvNeXt, Swin (v1, v2), MaxViT, ViT")


def _children(model: nn.Module, groups: list[tuple[str, list[str]]]) -> list[Stage]:
    """Stages that run the named children of ``model`` (dotted paths), group by group."""
    return [(name, paths, chain(model, *paths)) for name, paths in groups]


def _own_output(model: nn.Module, attr: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own forward with its classifier ``attr`` swapped for an identity (the reference features)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        classifier = getattr(model, attr)
        setattr(model, attr, nn.Identity())
        try:
            return model(x)
        finally:
            setattr(model, attr, classifier)

    return run


def _stage_layout(model: nn.Module) -> Layout:
    """Ordered (name, prefixes, fn) stages, the pooling, and the model's own pooled features, per family.

    Classifiers are cut off (their last layer replaced by an identity; auxiliary heads removed), so the pooled
    features are the model's own penultimate features and the body holds no unused parameters.
    """
    kind = type(model).__name__
    if kind == "ResNet":  # ResNet, ResNeXt, Wide ResNet
        model.fc = nn.Identity()
        stages = _children(model, [("stem", ["conv1", "bn1", "relu", "maxpool"])]
                           + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)])
        return stages, lambda x: torch.flatten(model.avgpool(x), 1), model
    if kind == "VisionTransformer":
        return _vit_layout(model)
    if kind in ("SwinTransformer", "MaxVit", "RegNet", "ShuffleNetV2", "GoogLeNet", "Inception3", "DenseNet",
                "SqueezeNet"):
        return globals()[f"_{kind.lower()}_layout"](model)
    if kind == "MNASNet":
        model.classifier[-1] = nn.Identity()
        stages = _width_groups(model, "layers")
        return stages, lambda x: model.classifier(x.mean([2, 3])), model
    if isinstance(getattr(model, "features", None), nn.Sequential):  # AlexNet, VGG, MobileNet, EfficientNet, ConvNeXt
        return _features_layout(model)
    raise ValueError(
        f"torchvision architecture {kind} has no known stage layout; headstart stages {SUPPORTED}. "
        "Use one of those, or the same model through 'timm:'"
    )


def _vit_layout(model: nn.Module) -> Layout:
    named_layers = list(model.encoder.layers.named_children())
    layers = [m for _, m in named_layers]

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = model._process_input(x)
        cls = model.class_token.expand(x.shape[0], -1, -1)
        return model.encoder.dropout(torch.cat([cls, x], dim=1) + model.encoder.pos_embedding)

    stages: list[Stage] = [("embed", ["conv_proj", "class_token", "encoder.pos_embedding"], embed)]
    stages += [(f"block{i}", [f"encoder.layers.{n}"], m) for i, (n, m) in enumerate(named_layers)]
    stages[-1] = (stages[-1][0], [*stages[-1][1], "encoder.ln"], sequential(layers[-1], model.encoder.ln))
    return stages, lambda x: x[:, 0], _own_output(model, "heads")


def _swintransformer_layout(model: nn.Module) -> Layout:
    """features: patch embedding, then (patch merging +) stage; NHWC inside, NCHW between stages."""
    model.head = nn.Identity()
    n = len(model.features)
    groups = [("stem", ["features.0"]), ("stage1", ["features.1"])]
    groups += [(f"stage{i // 2 + 1}", [f"features.{i}", f"features.{i + 1}"]) for i in range(2, n - 1, 2)]
    groups[-1] = (groups[-1][0], [*groups[-1][1], "norm"])
    stages = channels_first(_children(model, groups))
    return stages, lambda x: torch.flatten(model.avgpool(x), 1), model


def _maxvit_layout(model: nn.Module) -> Layout:
    model.classifier[-1] = nn.Identity()  # avgpool, flatten, LayerNorm, Linear, Tanh remain: the pre-logits
    stages = _children(model, [("stem", ["stem"])] + [(f"block{i}", [f"blocks.{i}"]) for i in range(len(model.blocks))])
    stages[-1] = (stages[-1][0], [*stages[-1][1], "classifier"], stages[-1][2])
    return stages, model.classifier, model


def _regnet_layout(model: nn.Module) -> Layout:
    model.fc = nn.Identity()
    blocks = [f"trunk_output.{n}" for n, _ in model.trunk_output.named_children()]
    stages = _children(model, [("stem", ["stem"])] + [(p.rsplit(".", 1)[-1], [p]) for p in blocks])
    return stages, lambda x: torch.flatten(model.avgpool(x), 1), model


def _shufflenetv2_layout(model: nn.Module) -> Layout:
    model.fc = nn.Identity()
    stages = _children(model, [("stem", ["conv1", "maxpool"]), ("stage2", ["stage2"]), ("stage3", ["stage3"]),
                               ("stage4", ["stage4"]), ("head", ["conv5"])])
    return stages, lambda x: x.mean([2, 3]), model


def _googlenet_layout(model: nn.Module) -> Layout:
    """Stride 8, 8, 16, 32 groups; the auxiliary classifiers (training only) are removed."""
    model.fc, model.aux_logits, model.aux1, model.aux2 = nn.Identity(), False, None, None
    model.transform_input = True  # what torchvision's pretrained weights expect (ImageNet-normalised input)
    stages = _children(model, [
        ("stem", ["conv1", "maxpool1", "conv2", "conv3", "maxpool2"]),
        ("inception3", ["inception3a", "inception3b"]),
        ("inception4", ["maxpool3", *[f"inception4{c}" for c in "abcde"]]),
        ("inception5", ["maxpool4", "inception5a", "inception5b"]),
    ])
    stages[0] = (stages[0][0], stages[0][1], sequential(model._transform_input, stages[0][2]))
    return stages, lambda x: model.dropout(torch.flatten(model.avgpool(x), 1)), model


def _inception3_layout(model: nn.Module) -> Layout:
    model.fc, model.aux_logits, model.AuxLogits = nn.Identity(), False, None
    model.transform_input = True  # what torchvision's pretrained weights expect (ImageNet-normalised input)
    stages = _children(model, [
        ("stem", ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                  "maxpool2"]),
        ("mixed5", ["Mixed_5b", "Mixed_5c", "Mixed_5d"]),
        ("mixed6", [f"Mixed_6{c}" for c in "abcde"]),
        ("mixed7", ["Mixed_7a", "Mixed_7b", "Mixed_7c"]),
    ])
    stages[0] = (stages[0][0], stages[0][1], sequential(model._transform_input, stages[0][2]))
    return stages, lambda x: torch.flatten(model.dropout(model.avgpool(x)), 1), model


def _densenet_layout(model: nn.Module) -> Layout:
    """A stem, then each dense block with the transition that follows it; ReLU before the pooling."""
    model.classifier = nn.Identity()
    groups: list[tuple[str, list[str]]] = []
    for name, _ in model.features.named_children():
        if not groups or name.startswith("denseblock"):
            groups.append(("stem" if not groups else name, []))
        groups[-1][1].append(f"features.{name}")
    return (_children(model, groups), lambda x: torch.flatten(F.adaptive_avg_pool2d(F.relu(x), 1), 1), model)


def _squeezenet_layout(model: nn.Module) -> Layout:
    """Max-pooling blocks of ``features``; the classifier (dropout, class convolution) is removed: 512 features."""
    model.classifier = nn.AdaptiveAvgPool2d(1)
    stages, _, _ = _features_layout(model)
    return stages, lambda x: torch.flatten(model.classifier(x), 1), model


def _width_groups(model: nn.Module, attr: str) -> list[Stage]:
    """Consecutive children of the Sequential ``attr`` with the same output width form one group."""
    container = getattr(model, attr)
    blocks: list[list[str]] = []
    width, x = None, torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        was = model.training
        model.eval()
        for name, m in container.named_children():
            x = m(x)
            if x.shape[1] != width:
                blocks.append([])
                width = x.shape[1]
            blocks[-1].append(name)
        model.train(was)
    stages = [(f"{attr}{block[0]}", [f"{attr}.{n}" for n in block], chain(container, *block)) for block in blocks]
    stages[0] = ("stem", *stages[0][1:])
    return stages


def _features_layout(model: nn.Module) -> Layout:
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
        stages = [
            (f"features{block[0][0]}", [f"features.{n}" for n, _ in block],
             chain(model.features, *[n for n, _ in block]))
            for block in blocks
        ]
        stages[0] = ("stem", *stages[0][1:])
    else:  # consecutive blocks with the same output width form one group
        stages = _width_groups(model, "features")
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

    return stages, pool, model


@torch.no_grad()
def _check(model: nn.Module, arch: str, stages: list[Stage], pool: Callable, reference: Callable, size: int) -> int:
    """The staged features must equal the model's own (on a random input); returns their size."""
    was = model.training
    model.eval()
    try:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        out, expected = pool(sequential(*[fn for _, _, fn in stages])(x)), reference(x)
    finally:
        model.train(was)
    tol = 1e-5 * max(1.0, float(expected.abs().max()))
    if out.shape != expected.shape or not torch.allclose(out, expected, rtol=1e-4, atol=tol):
        raise ValueError(
            f"The stage layout of torchvision '{arch}' does not reproduce the model's own features "
            f"({tuple(out.shape)} vs {tuple(expected.shape)}); this torchvision version changed the architecture. "
            "Use the same model through 'timm:'"
        )
    return int(out.shape[-1])


def build(arch: str, spec: BackboneSpec) -> Backbone:
    """A randomly initialised torchvision model, classifier removed, as a Backbone."""
    model = torchvision.models.get_model(arch, weights=None)
    stages, pool, reference = _stage_layout(model)
    spec.num_params = count_params(model)
    spec.feature_dim = _check(model, arch, stages, pool, reference, spec.input_size)
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
