"""Splits of a dataset (shared by every task): what a reader found, and seeded stratified splits."""

from __future__ import annotations

import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headstart.errors import DataError

# columns that say which items belong together (one patient's scans, one lesion's photos), by name without case,
# blanks, '_' or '-': 'Patient ID' (NIH ChestX-ray14), 'lesion_id' (HAM10000), 'patient_id' (ISIC, RSNA)
GROUP_NAMES = ("patientid", "patient", "subjectid", "lesionid", "caseid", "studyid")  # not 'group': often a class
NO_GROUPS = "none"  # data.group_column=none: no group column, even one of GROUP_NAMES
# a patient's (subject's, case's) files named by a folder or a file name's start: CheXpert's patient00001/, Kaggle's
# chest X-rays' person1_bacteria_1.jpeg and person1_virus_6.jpeg
PATH_GROUP = re.compile(r"(?:patient|person|subject|case)[-_ ]?\d+(?!\d)", re.IGNORECASE)


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
    aliases: dict[str, str] = field(default_factory=dict)  # a code naming a class in DATA -> the class's name
    unmirrored: str = ""  # why a mirror image of an item is no item of the data (handwriting): data.flip=auto: none


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


def group_column(columns: Sequence[str], wanted: str | None, taken: Sequence[str], where: Any) -> str | None:
    """The column of a table naming each item's group: ``wanted`` (must exist; ``none``: no groups), else the first
    column named as one of ``GROUP_NAMES`` that is not ``taken`` (the paths', labels'...), else None."""
    if no_groups(wanted):
        return None
    if wanted:
        if wanted not in columns:
            raise DataError(f"{where}: no column '{wanted}' for the groups (data.group_column); columns found: "
                            f"{list(columns)}")
        return wanted
    plain = {re.sub(r"[\s_-]+", "", c.lower()): c for c in columns if c not in taken}
    return next((plain[n] for n in GROUP_NAMES if n in plain), None)


def no_groups(wanted: str | None) -> bool:
    """``data.group_column=none``: no groups, neither a table's column nor the patients that paths name."""
    return wanted is not None and wanted.strip().lower() == NO_GROUPS


def path_groups(paths: Sequence[Any], labels: Sequence[Any]) -> tuple[list[str], str]:
    """Each path's patient (subject, case) as the path names it below the folder all ``paths`` share ('' for none):
    the first folder, or file name, that begins with ``PATH_GROUP``; and a note for the layout line ('' and no groups
    unless some group holds 2 or more paths, and none where a class of 2 or more items would be one group: class
    folders named ``subject1/``, ``subject2/``... are people to tell apart, not patients to keep together)."""
    if len(paths) < 2:
        return [""] * len(paths), ""
    top = os.path.commonpath([os.fspath(p) for p in paths])
    groups = []
    for p in paths:
        match = next((m for part in os.path.relpath(os.fspath(p), top).split(os.sep)
                      if (m := PATH_GROUP.match(part))), None)
        groups.append(match.group(0).lower() if match else "")
    named = [g for g in groups if g]
    units: dict[Any, set[str]] = defaultdict(set)
    for i, (group, label) in enumerate(zip(groups, labels)):
        units[label].add(group or f"#{i}")
    sizes = Counter(labels)
    if len(named) == len(set(named)) or any(len(units[c]) < 2 <= n for c, n in sizes.items()):
        return [""] * len(paths), ""
    return groups, (f"split by the patients the paths name: {len(set(named))} of {len(named)} images (e.g. "
                    f"'{named[0]}'), each one's images on one side of the split (data.group_column=none: not)")


def group_by_path(samples: Sequence[Any], labels: Sequence[Any]) -> str:
    """Set ``group`` of each sample (``.path``, ``.group``) to the patient its path names (``path_groups``), unless
    a sample already has a group (a table's column); the layout note, '' when no groups were set."""
    if any(s.group for s in samples):
        return ""
    groups, note = path_groups([s.path for s in samples], labels)
    for sample, group in zip(samples, groups) if note else ():
        sample.group = group
    return note


def merged_units(*keyings: Sequence[str]) -> list[str]:
    """One unit key per item: items that share a non-empty key in any of ``keyings`` (content hashes, groups) are one
    unit, also through chains (a duplicate of another patient's file joins the two patients)."""
    n = len(keyings[0]) if keyings else 0
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in keyings:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key:
                parent[root(i)] = root(first.setdefault(key, i))
    return [f"unit{root(i)}" for i in range(n)]


def group_note(groups: Sequence[str], column: str, what: str) -> str:
    """How many groups a column makes, for the layout line."""
    named = [g for g in groups if g]
    count = len(set(named))
    return (f"split by '{column}': {count} groups of {len(named)} {what} (each group's {what} stay on one side of the "
            "split)")


def straddling_groups(train: Sequence[str], held: Sequence[str], column: str, name: str) -> str | None:
    """A note when DATA's own splits put one group (patient...) on both sides, or None."""
    both = sorted(set(g for g in train if g) & set(g for g in held if g))
    if not both:
        return None
    return (f"{len(both)} '{column}' group(s) have items in training and in {name} (e.g. {both[0]!r}): the {name} scores "
            "are optimistic, as the model saw those groups. Keep each group on one side")


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
