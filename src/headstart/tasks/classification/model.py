"""Classification model: backbone + new head, able to start from cached features."""

from __future__ import annotations

import torch
from torch import nn

from headstart.core.backbones.base import Backbone


class ClassificationHead(nn.Sequential):
    """Dropout then a linear layer: the new, randomly initialised classifier."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


def head_logits(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's logits in fp32, also under bf16 autocast: a bf16 head rounds them (by up to 0.5 on a wide head of
    large weights), so that prediction would not give the scores of validation, whose head on cached features runs
    in fp32. The head is one small matrix: fp32 costs nothing beside the backbone."""
    with torch.autocast(features.device.type, enabled=False):
        return head(features.float())


class TransferClassifier(nn.Module):
    """``backbone -> head``; ``forward(x, start=k)`` takes the output of backbone stage ``k - 1``."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassificationHead(backbone.spec.feature_dim, num_classes, dropout)

    @property
    def num_groups(self) -> int:
        return self.backbone.num_groups

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.head(self.backbone(x, start=start))
