"""Detection from a labelling tool's export (``tasks/exports/``: Label Studio's JSON, CVAT's XML, VIA's JSON): each task's
rectangles (and the boxes around its polygons), with the image found by its file name under the export's folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from headstart.errors import DataError
from headstart.tasks.detection.data import ISSUE_BACKGROUND, DetectionSplits, DetSample, fix_boxes, random_split
from headstart.tasks.exports import Task, export_splits, file_names, media_column, read_tasks, tool_of
from headstart.tasks.tables import table_files

ISSUE_UNANNOTATED = "tasks without an annotation (not labelled yet), not read"
ISSUE_UNREAD = "marks that are no box or polygon (bitmaps, points, lines, key points), not read"


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
    note = "; only polygons: their boxes are read, --task segmentation reads their pixels" if kinds == {"polygon"} else ""
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
    tasks = read_tasks(path)
    labelled = [t for t in tasks if t.annotated]
    issues[ISSUE_UNANNOTATED] += len(tasks) - len(labelled)
    issues[ISSUE_UNREAD] += sum(t.unread for t in labelled)
    media = media_column(labelled)
    if media is None:
        raise DataError(f"{path}: no field of its tasks' data names an image (as 'image': '/data/upload/1/x.jpg')")
    files, _ = table_files(path, file_names(path, [str(t.data.get(media) or "") for t in labelled]))
    missing = [(t, f) for t, f in zip(labelled, files) if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} of its {len(labelled)} labelled task(s) name an image not found under "
                        f"{path.parent}, e.g. task {missing[0][0].number}: {missing[0][0].data.get(media)} (looked for "
                        f"{missing[0][1]}). Put the images beside the export (Label Studio's JSON does not hold them: "
                        "copy the folder you uploaded; CVAT exports them when asked to save images)")
    return list(zip(labelled, files))
