"""Imbalanced classes, for images and texts alike: inverse-frequency loss weights and class-balanced batches."""

from types import SimpleNamespace

import pytest
import torch

from headstart.config import DeviceConfig, RunConfig
from headstart.core import loop
from headstart.errors import ConfigError
from headstart.tasks.classification.training import ClassificationSteps, inverse_frequency


def _steps(counts: list[int], **train) -> ClassificationSteps:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    data = SimpleNamespace(classes=[f"c{i}" for i in range(len(counts))], collate=None,
                           labels=lambda split: labels if split == "train" else labels[::4])
    steps = ClassificationSteps(data, RunConfig(train=train))
    steps.train_views = torch.randn(1, len(labels), 8)  # cached pooled features, as a frozen phase serves them
    return steps


def test_class_weights_and_balanced_batches():
    counts = [90, 30, 6]
    plain = _steps(counts)
    assert plain.criterion.weight is None
    weighted = _steps(counts, class_weights=True)
    torch.testing.assert_close(weighted.criterion.weight, torch.tensor([126 / 270, 126 / 90, 126 / 18]))
    assert float((weighted.criterion.weight * torch.tensor(counts, dtype=torch.float)).std()) < 1e-4  # equal totals
    torch.testing.assert_close(inverse_frequency([5, 0]), torch.tensor([0.6, 3.0]))  # an absent class counts as one

    fabric = loop.make_fabric(DeviceConfig(accelerator="cpu"))
    seen = {}
    for name, steps in (("plain", plain), ("balanced", _steps(counts, balanced_sampling=True))):
        labels = torch.cat([y for epoch in range(5) for _, y in steps.train_loader(fabric, 1, epoch, seed=epoch)])
        assert len(labels) == 5 * sum(counts)  # an epoch is still one pass's worth of items
        seen[name] = torch.bincount(labels, minlength=3).float() / len(labels)
    torch.testing.assert_close(seen["plain"], torch.tensor(counts, dtype=torch.float) / sum(counts))
    assert seen["balanced"].min() > 0.27 and seen["balanced"].max() < 0.40  # about a third each
    two = SimpleNamespace(world_size=2)
    with pytest.raises(ConfigError, match="balanced_sampling draws the batches on one device"):
        _steps(counts, balanced_sampling=True).train_loader(two, 1, 0, seed=0)
