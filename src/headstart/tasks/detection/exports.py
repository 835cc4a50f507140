"""Detection from a labelling tool's export (``tasks/exports/``: Label Studio's JSON, CVAT's XML, VIA's JSON): each task's
rectangles (and the boxes around its polygons and bitmaps), with the image found by its file name under the export's folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from headstart.errors import DataError
from headstart.tasks.detection.data import ISSUE_BACKGROUND, DetectionSplits, DetSample, fix_boxes, random_split
from headstart.tasks.exports import Task, export_splits, labelled_images, tool_of

ISSUE_UNANNOTATED = "tasks without an annotation (not labelled yet), not read"
ISSUE_UNREAD = "marks that are no box, polygon or bitmap (points, lines, key points), not read"


def read_export(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """An export, the folder holding it and its images, or the folder of its ``train/``, ``val/`` (``test/``) folders
    each holding one (``exports.export_splits``); a seeded validation split when none is given."""
    given = Path(data)
    exports = export_splits(given) if given.is_dir() else {"train": given}
    if not exports:
        raise DataError(f"{data}: expected a labelling tool's export (Label Studio's JSON, CVAT's annotations.xml, "
                        "VIA's JSON)")
    issues: Counter = Counter()
    read = {split: _labelled(path, issues) for split, path in exports.items()}
    classes = sorted({r.label for tasks in read.values() for t, _ in tasks for r in t.regions})
    if not classes:
        raise DataError(f"{data}: no rectangle or polygon with a label in its labelled task(s)")
    first = exports["train"]
    where = first.name if len(exports) == 1 else ", ".join(f"{p.parent.name}/{p.name}" for p in exports.values())
    n = sum(len(tasks) for tasks in read.values())
    kinds = {r.kind for tasks in read.values() for t, _ in tasks for r in t.regions}
    shapes = " and ".join(f"{k}s" for k in sorted(kinds))
    note = (f"; only {shapes}: their boxes are read, --task segmentation reads their pixels"
            if kinds and kinds <= {"polygon", "bitmap"} else "")
    splits = DetectionSplits(classes, [], [], issues=issues, layout=f"{tool_of(first)} export {where} ({n} labelled "
                             f"images{note})")
    for split, tasks in read.items():
        for task, file in tasks:
            boxes = torch.tensor([list(r.box) for r in task.regions], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([classes.index(r.label) for r in task.regions], dtype=torch.long)
            issues[ISSUE_BACKGROUND] += not task.regions
            getattr(splits, split).append(DetSample(file, *fix_boxes(boxes, labels, issues)))
    if not splits.val:
        random_split(splits, val_fraction, seed)
    for key in [k for k, v in issues.items() if not v]:
        del issues[key]
    return splits


def _labelled(path: Path, issues: Counter) -> list[tuple[Task, Path]]:
    """The labelled tasks of one export with their image files (a DataError names a task whose image is missing)."""
    found = labelled_images(path)
    issues[ISSUE_UNANNOTATED] += found.unlabelled
    issues[ISSUE_UNREAD] += found.unread
    missing = [(t, f) for t, f in found.items if not f.is_file()]
    if missing:
        task, file = missing[0]
        raise DataError(f"{path}: {len(missing)} of its {len(found.items)} labelled task(s) name an image not found "
                        f"under {path.parent}, e.g. task {task.number}: {task.data} (looked for {file}). Put the "
                        "images beside the export (Label Studio's JSON does not hold them: copy the folder you "
                        "uploaded; CVAT exports them when asked to save images)")
    return found.items
