"""Classification model: backbone + new head, able to start from cached features."""

from __future__ import annotations

import torch
from torch import nn

from headstart.core.backbones.base import Backbone


class ClassificationHead(nn.Sequential):
    """Dropout then a linear layer: the new, randomly initialised classifier."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


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
