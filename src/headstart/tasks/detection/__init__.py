"""Object detection. This module imports no torch: ``infer_task`` reads ``names_file`` from here."""

from __future__ import annotations

from pathlib import Path

from headstart.tasks.tables import IMAGE_SUFFIXES

NAMES_FILES = ("classes.txt", "obj.names", "names.txt")  # labelImg's and Darknet's class lists, line i = class id i
VOC_IMAGE_FOLDERS = ("JPEGImages", "images", "Images")  # where a Pascal VOC layout keeps its images


def voc_folders(root: Path) -> tuple[Path, Path] | None:
    """(annotations folder, images folder) when ``root`` is a Pascal VOC layout: ``Annotations/`` (VOC's own), or an
    ``annotations/`` holding .xml files (labelImg's output as Kaggle and GitHub sets ship it: the raccoon, face-mask
    and road-sign sets), beside ``JPEGImages/`` or ``images/``; else None (``annotations/*.json`` is COCO)."""
    if not root.is_dir():
        return None
    notes = root / "Annotations"
    if not notes.is_dir():
        notes = root / "annotations"
        if not notes.is_dir() or not any(notes.glob("*.xml")):
            return None
    images = next((root / n for n in VOC_IMAGE_FOLDERS if (root / n).is_dir()), root / "JPEGImages")
    return notes, images


def names_file(root: Path) -> Path | None:
    """The class list of a YOLO folder without data.yaml (labelImg's export: images, their ``.txt`` boxes and
    ``classes.txt`` side by side, or in ``images/`` and ``labels/``), when ``root`` is one."""
    if not root.is_dir() or any((root / n).exists() for n in ("data.yaml", "dataset.yaml")):
        return None
    found = next((root / n for n in NAMES_FILES if (root / n).is_file()), None)
    if found is None:
        return None
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return found
    stems = {p.stem for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    return found if any(p.stem in stems for p in root.glob("*.txt") if p.name not in NAMES_FILES) else None
