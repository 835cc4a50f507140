"""Task heads placed on top of a backbone's pooled features."""

from __future__ import annotations

from torch import nn


class ClassificationHead(nn.Sequential):
    """Dropout then a linear layer: the new, randomly initialised classifier."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
