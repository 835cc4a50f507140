"""Splits of a dataset (shared by every task): what a reader found, and seeded stratified splits."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Splits:
    """What a task's reader found in DATA: classes, the splits, and every item left out with the reason."""

    classes: list[str]
    train: list[Any]
    val: list[Any]
    test: list[Any] = field(default_factory=list)
    layout: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or row, why)
    notes: list[str] = field(default_factory=list)  # what the user should know about the data
    val_held_out: bool = False  # validation was held out of the training items (DATA gave no validation split)


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``; each class with 2+ items gives at least one to validation."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        idx = by_class[label][:]
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * fraction))) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)
