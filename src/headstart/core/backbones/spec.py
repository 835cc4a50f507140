"""BackboneSpec: everything needed to rebuild a backbone and reproduce its preprocessing.

A spec is bound to one weight source. It is saved with every trained model so that evaluate,
predict and export use exactly the preprocessing the model was trained with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerGroup:
    """A named group of backbone parameters, selected by parameter-name prefixes."""

    name: str
    prefixes: list[str]


@dataclass
class BackboneSpec:
    """Preprocessing, feature size and layer groups of a backbone bound to its weights."""

    name: str  # what the user asked for, e.g. "efficientnet_lite0" or "tv:resnet50"
    source: str  # "packaged", "tv", "timm", "hf"
    arch: str  # architecture id of the source, e.g. "tf_efficientnet_lite0"
    weights: str | None  # weight id or file path (None: random initialisation)
    modality: str = "image"  # "image" or "text"
    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    feature_dim: int = 0
    num_params: int = 0
    groups: list[LayerGroup] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def preprocessing_key(self) -> dict[str, Any]:
        """The fields that change what the backbone sees (used in cache keys)."""
        key = {
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }
        if self.extra.get("intensity", "off") != "off":  # decoding with intensity windowing (absent: raw values)
            key["intensity"] = self.extra["intensity"]
        return key

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        d = dict(d)
        d["groups"] = [LayerGroup(**g) for g in d.get("groups", [])]
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown fields in backbone spec: {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
