"""Detection from LabelMe's annotations (``tasks/labelme.py``): each area shape's box, normalised to its image."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from headstart.errors import DataError
from headstart.tasks.detection.data import ISSUE_BACKGROUND, DetectionSplits, DetSample, fix_boxes, random_split
from headstart.tasks.labelme import (
    ISSUE_NOT_AREAS,
    ISSUE_UNANNOTATED,
    LabelmeFile,
    labelme_splits,
    read_file,
    unannotated,
)

POLYGONS_NOTE = "only polygons: their boxes are read; --task segmentation reads their pixels"


def _boxes(found: LabelmeFile, issues: Counter) -> tuple[list[str], torch.Tensor]:
    """The labels of a file's area shapes and their boxes (``xyxy`` normalised to the image)."""
    names, boxes = [], []
    for shape in found.shapes:
        box = shape.box()
        if box is None:
            issues[ISSUE_NOT_AREAS] += 1
            continue
        names.append(shape.label)
        boxes.append([box[0] / found.width, box[1] / found.height, box[2] / found.width, box[3] / found.height])
    return names, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def read_labelme(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """A folder of LabelMe files (or its split folders); a seeded validation split when none is given."""
    root = Path(data)
    folders = labelme_splits(root)
    if not folders:
        raise DataError(f"{data}: expected LabelMe annotations (a .json with 'shapes' beside each image)")
    issues: Counter = Counter()
    read: dict[str, list[LabelmeFile]] = {}
    for split, folder in folders.items():
        read[split] = [read_file(f) for f in sorted(folder.glob("*.json"))]
        issues[ISSUE_UNANNOTATED] += unannotated(folder, read[split])
    classes = sorted({s.label for files in read.values() for f in files for s in f.shapes if s.box() is not None})
    if not classes:
        raise DataError(f"{data}: no labelled area shape (rectangle, polygon, circle) in its LabelMe files")
    where = ", ".join(f"{folder.name}/ {len(read[split])}" for split, folder in folders.items()) \
        if len(folders) > 1 or folders.get("train") != root else f"{len(read['train'])} files"
    kinds = {s.kind for files in read.values() for f in files for s in f.shapes}
    note = f"; {POLYGONS_NOTE}" if kinds == {"polygon"} else ""
    splits = DetectionSplits(classes, [], [], layout=f"LabelMe {root.name} ({where}{note})", issues=issues)
    for split, files in read.items():
        for found in files:
            names, boxes = _boxes(found, issues)
            if not names:
                issues[ISSUE_BACKGROUND] += 1
            labels = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
            getattr(splits, split).append(DetSample(found.image, *fix_boxes(boxes, labels, issues)))
    if not splits.val:
        random_split(splits, val_fraction, seed)
    for key in [k for k, v in issues.items() if not v]:
        del issues[key]
    return splits
