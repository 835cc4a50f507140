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


def stratified_split(labels: Sequence[int], fraction: float, seed: int,
                     groups: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``; each class with 2+ items gives at least one to validation.

    ``groups`` (one key per item, e.g. the content hash of a file): items with the same key are one
    unit, always on the same side (an exact duplicate is never in training and in validation); a unit
    counts for the class of its first item.
    """
    units: dict[str, list[int]] = {}
    for i in range(len(labels)):
        units.setdefault(groups[i] if groups is not None and groups[i] else f"#{i}", []).append(i)
    by_class: dict[int, list[list[int]]] = defaultdict(list)
    for members in units.values():
        by_class[labels[members[0]]].append(members)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        idx = by_class[label][:]
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * fraction))) if len(idx) > 1 else 0
        val += [i for members in idx[:n_val] for i in members]
        train += [i for members in idx[n_val:] for i in members]
    return sorted(train), sorted(val)


def duplicate_groups(keys: Sequence[str]) -> list[list[int]]:
    """Indices of the items that share a key (non-empty), one list per key seen more than once."""
    seen: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key:
            seen[key].append(i)
    return [members for members in seen.values() if len(members) > 1]


def split_notes(labels: Sequence[int], val_labels: Sequence[int], classes: Sequence[str], what: str) -> list[str]:
    """What to say about a held-out split: classes with too few items to give one to validation."""
    counts = defaultdict(int)
    for label in labels:
        counts[label] += 1
    in_val = set(val_labels)
    lonely = [classes[c] for c in sorted(counts) if c not in in_val]
    if not lonely:
        return []
    return [f"{len(lonely)} class(es) have too few {what} to give one to validation (1 each, or duplicates of one "
            f"file): {', '.join(lonely[:10])}{'...' if len(lonely) > 10 else ''}. They are trained on but not "
            "validated; add items of them or give a validation split"]
