"""timm models as backbones (``timm:NAME[.TAG]``).

Layouts, tried in order (the first that reproduces the model wins):

1. hand-made ones for EfficientNet/MobileNet (a separate ``head`` group), ViT/DeiT (position embedding and
   class token in the ``embed`` group) and EVA-02 (rotary embedding given to every block);
2. timm's own metadata: ``model.group_matcher(coarse=True)`` (the grouping timm's layer-wise LR decay uses)
   decides where a group ends, and the order in which ``forward_features`` calls the model's children
   (traced with hooks) decides how the groups run (ConvNeXt, Swin, ResNet, RegNet, MaxViT, CSPNet, ...);
3. transformers with a ``blocks`` list: everything ``forward_features`` does before the first block is the
   ``embed`` group, then one group per block (BEiT, ...).

Every layout is checked on a random input against the model's own
``forward_head(forward_features(x), pre_logits=True)``. A model that no layout reproduces stays one group,
with a ``UserWarning`` saying that partial unfreezing and layer decay cannot act on it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from headstart.core.backbones.base import Backbone, chain, channels_first, count_params, sequential
from headstart.core.backbones.spec import BackboneSpec

Stage = tuple[str, list[str], Callable[[torch.Tensor], torch.Tensor]]


def list_names(pattern: str = "*", pretrained: bool = True) -> list[str]:
    return timm.list_models(pattern, pretrained=pretrained)


def _known_layout(model: nn.Module, called: list[str]) -> list[Stage] | None:
    """Hand-made layouts: EfficientNet's separate head, ViT's embedding, EVA-02's rotary embedding."""
    names = dict(model.named_children())
    if {"conv_stem", "bn1", "blocks"} <= names.keys():  # EfficientNet, MobileNetV2/V3, MixNet...
        stages: list[Stage] = [("stem", ["conv_stem", "bn1"], chain(model, "conv_stem", "bn1"))]
        stages += [(f"blocks{i}", [f"blocks.{i}"], chain(model, f"blocks.{i}")) for i in range(len(model.blocks))]
        # EfficientNet's conv_head/bn2 end forward_features; MobileNetV3 applies them after pooling.
        tail = [n for n in ("conv_head", "bn2") if n in called]
        if tail:
            stages.append(("head", tail, chain(model, *tail)))
        return stages
    if isinstance(model, VisionTransformer):  # ViT, DeiT, ViT-hybrid...

        def embed(x: torch.Tensor) -> torch.Tensor:
            x = model._pos_embed(model.patch_embed(x))
            return model.norm_pre(model.patch_drop(x))

        stages = [("embed", ["patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre"], embed)]
        stages += [(f"block{i}", [f"blocks.{i}"], b) for i, b in enumerate(model.blocks)]
        last_name, last_prefixes, last_fn = stages[-1]
        stages[-1] = (last_name, [*last_prefixes, "norm"], sequential(last_fn, model.norm))
        return stages
    if type(model).__name__ == "Eva" and model.patch_drop is None and not getattr(model, "rope_mixed", False) \
            and not getattr(model, "dynamic_img_size", False):  # EVA-02: every block takes the rotary embedding
        return _eva_layout(model)
    return None


def _eva_layout(model: nn.Module) -> list[Stage]:
    def rope() -> torch.Tensor | None:  # fixed sin/cos tables (buffers), as Eva._pos_embed computes them
        r = model.rope
        if r is None:
            return None
        return r.get_embed() if hasattr(r, "feat_shape") else r.get_embed(shape=model.patch_embed.grid_size)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.norm_pre(model._pos_embed(model.patch_embed(x))[0])

    def block(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            x = model.blocks[i](x, rope=rope())
            return model.norm(x) if i == len(model.blocks) - 1 else x

        return run

    stages: list[Stage] = [("embed", ["patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre"], embed)]
    stages += [(f"block{i}", [f"blocks.{i}"], block(i)) for i in range(len(model.blocks))]
    stages[-1] = (stages[-1][0], [*stages[-1][1], "norm"], stages[-1][2])
    return stages


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _unmatched(matcher: object, names: list[str]) -> set[str]:
    """Parameter names no rule of a dict group matcher matches (timm puts them in a trailing 'neck/head' group)."""
    if not isinstance(matcher, dict):
        return set()
    patterns = []
    for rule in matcher.values():
        if isinstance(rule, (list, tuple)):
            patterns += [re.compile(r[0]) for r in rule]
        elif rule is not None:
            patterns.append(re.compile(rule))
    return {n for n in names if not any(p.match(n) for p in patterns)}


def _traced_layout(model: nn.Module, called: list[str]) -> list[Stage] | None:
    """Groups from timm's coarse group matcher over the children ``forward_features`` calls, in call order.

    A plain ``nn.Sequential`` child whose items fall in several groups (``stages``, ``layers``) is opened
    into its items. Without a matcher, each called child and each item of a called Sequential is a group.
    """
    if not called or len(set(called)) != len(called):
        return None
    params = [n for n, _ in model.named_parameters()]
    try:
        matcher = model.group_matcher(coarse=True)
        group_of = timm.models.group_parameters(model, matcher, reverse=True)
    except (AttributeError, AssertionError, NotImplementedError, TypeError):
        matcher, group_of = None, {}
    ignore = _unmatched(matcher, params)

    def ids(path: str) -> set[float]:
        """timm group ids of the parameters under ``path`` (unmatched ones, e.g. a final norm, excluded)."""
        return {float(group_of.get(n, 0)) for n in params if n.startswith(path + ".") and n not in ignore}

    def owns(path: str) -> bool:
        return any(n.startswith(path + ".") for n in params)

    def units(path: str, depth: int) -> list[str]:
        module = model.get_submodule(path)
        if _is_plain_sequential(module) and len(module) > 1 and (len(ids(path)) > 1 if matcher else depth == 0):
            return [u for name, _ in module.named_children() for u in units(f"{path}.{name}", depth + 1)]
        return [path]

    stages: list[tuple[list[str], list[float]]] = []  # (unit paths, [highest group id]) per stage
    for unit in (u for name in called for u in units(name, 0)):
        unit_ids = ids(unit)
        if stages:
            paths, top = stages[-1]
            starts = bool(unit_ids) and min(unit_ids) > top[0] if matcher else owns(unit)
            if not (starts and any(owns(p) for p in paths)):
                paths.append(unit)
                top[0] = max([top[0], *unit_ids])
                continue
        stages.append(([unit], [max(unit_ids, default=float("-inf"))]))
    if len(stages) < 2:
        return None
    return [("stem" if i == 0 else next(p for p in paths if owns(p)), paths, chain(model, *paths))
            for i, (paths, _) in enumerate(stages)]


class _Reached(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a pre-hook on the first block: carries the block's input out of ``forward_features``."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x


def _token_layout(model: nn.Module, called: list[str]) -> list[Stage] | None:
    """Transformers with a ``blocks`` list: whatever ``forward_features`` does before the first block (patch and
    position embedding, class tokens...) is the first stage, then one stage per block, then the children called
    after the blocks (the final norm) join the last block."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) < 2:
        return None
    block_calls = [i for i, n in enumerate(called) if n == "blocks" or n.startswith("blocks.")]
    if not block_calls or block_calls != list(range(block_calls[0], block_calls[-1] + 1)):
        return None
    before, after = called[:block_calls[0]], called[block_calls[-1] + 1:]
    first = blocks[0]

    def embed(x: torch.Tensor) -> torch.Tensor:
        def stop(module: nn.Module, args: tuple) -> None:
            raise _Reached(args[0])

        hook = first.register_forward_pre_hook(stop)
        try:
            model.forward_features(x)
        except _Reached as reached:
            return reached.x
        finally:
            hook.remove()
        raise RuntimeError(f"{type(model).__name__}.forward_features never calls its first block")

    stages: list[Stage] = [("embed", [*before, *model._parameters], embed)]
    stages += [(f"block{i}", [f"blocks.{i}"], chain(model, f"blocks.{i}")) for i in range(len(blocks))]
    name, prefixes, _ = stages[-1]
    stages[-1] = (name, [*prefixes, *after], chain(model, f"blocks.{len(blocks) - 1}", *after))
    return stages


@torch.no_grad()
def _layout(model: nn.Module, size: int, arch: str) -> tuple[list[Stage], Callable, int]:
    """Stages, pooling and feature size of ``model``: the first layout that reproduces its own features."""
    was = model.training
    model.eval()
    try:
        called: list[str] = []  # children (and items of list children) in the order forward_features calls them
        hooks = []
        for name, child in model.named_children():
            items = [(f"{name}.{i}", item) for i, item in child.named_children()] \
                if isinstance(child, (nn.Sequential, nn.ModuleList)) else []
            for path, module in [(name, child), *items]:
                hooks.append(module.register_forward_hook(lambda *_, n=path: called.append(n)))
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        try:
            reference = model.forward_features(x)
        finally:
            for hook in hooks:
                hook.remove()
        # a Sequential called as a whole runs its items itself: keep the Sequential, not its items
        called = [n for n in called if n.rpartition(".")[0] not in called]
        problems = []
        if not isinstance(reference, torch.Tensor):  # several outputs (multi-branch models): no sequential layout
            called, problems = [], [f"forward_features returns a {type(reference).__name__}, not one tensor"]
        nhwc = called and reference.ndim == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC"

        def head(h: torch.Tensor) -> torch.Tensor:
            return model.forward_head(h, pre_logits=True)

        def head_nhwc(h: torch.Tensor) -> torch.Tensor:
            return model.forward_head(h.permute(0, 2, 3, 1) if h.ndim == 4 else h, pre_logits=True)

        expected = head(reference)
        for make in (_known_layout, _traced_layout, _token_layout) if called else ():
            try:
                stages = make(model, called)
                if stages is None:
                    continue
                if nhwc:
                    stages = channels_first(stages)
                pool = head_nhwc if nhwc else head
                out = pool(sequential(*[fn for _, _, fn in stages])(x))
            except Exception as exc:  # noqa: BLE001 - a layout that cannot run is one that does not fit
                problems.append(f"{make.__name__}: {type(exc).__name__}: {exc}")
                continue
            tol = 1e-5 * max(1.0, float(expected.abs().max()))
            if out.shape == expected.shape and torch.allclose(out, expected, rtol=1e-4, atol=tol):
                return stages, pool, int(out.shape[-1])
            problems.append(f"{make.__name__}: features differ from forward_features")
        warnings.warn(
            f"timm model '{arch}' ({type(model).__name__}) could not be cut into layer groups "
            f"({'; '.join(problems) or 'forward_features calls no child modules in sequence'}); it is ONE group, "
            "so 'partial:K', 'gradual' and layer decay cannot act on parts of it (use 'linear' or 'full')",
            UserWarning, stacklevel=3)
        return [("body", [""], model.forward_features)], head, int(expected.shape[-1])
    finally:
        model.train(was)


def build(arch: str, spec: BackboneSpec, pretrained: bool = False, model: nn.Module | None = None) -> Backbone:
    """A timm model (classifier removed) as a Backbone."""
    if model is None:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0)
    else:
        model.reset_classifier(0)
    stages, pool, spec.feature_dim = _layout(model, spec.input_size, arch)
    spec.num_params = count_params(model)
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
