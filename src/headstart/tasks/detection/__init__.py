"""Object detection. This module imports no torch: ``infer_task`` reads ``names_file`` from here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from headstart.tasks.tables import IMAGE_SUFFIXES, SPLIT_FOLDERS, TABLE_FILES, WORKBOOKS

NAMES_FILES = ("classes.txt", "obj.names", "names.txt")  # labelImg's and Darknet's class lists, line i = class id i
VOC_IMAGE_FOLDERS = ("JPEGImages", "images", "Images")  # where a Pascal VOC layout keeps its images
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")  # a table of boxes: TensorFlow Object Detection CSV (Roboflow, raccoon)
BOX_FORMS = (  # the columns that write a box in a table, tried in this order
    BOX_COLUMNS,  # the corners, in pixels
    ("x", "y", "width", "height"),  # the top-left corner and the size (RSNA Pneumonia's stage_2_train_labels.csv)
    ("x", "y", "w", "h"),
    ("bbox",),  # one cell "[x, y, width, height]", COCO's order (Global Wheat's train.csv)
)
BOX_TABLE = "_annotations.csv"  # Roboflow's TensorFlow CSV export: one per split folder, beside the images
IN_IMAGE = 0.5  # a detection with less than this share of its box inside the image is in the letterbox's padding


def clipped_to_image(boxes: Any, width: int, height: int) -> tuple[Any, Any]:
    """``(boxes clipped to the image, keep)`` for ``(n, 4)`` ``[x1, y1, x2, y2]`` boxes in image pixels (a NumPy
    array): ``keep`` is False for a box with less than ``IN_IMAGE`` of its area inside the image. The detector sees
    the letterboxed square, so it may find objects in the padding right of or below the image; clipped, they would
    be boxes of no height or width along the image's edge."""
    import numpy as np

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2], clipped[:, 1::2] = clipped[:, 0::2].clip(0, width), clipped[:, 1::2].clip(0, height)

    def area(b: Any) -> Any:
        return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)

    inside = area(clipped)
    return clipped, (inside > 0) & (inside >= IN_IMAGE * area(boxes))


def box_form(columns: Iterable[str]) -> tuple[str, ...] | None:
    """The first of ``BOX_FORMS`` whose columns a table has (names without case), or None."""
    names = {c.strip().lower() for c in columns}
    return next((form for form in BOX_FORMS if set(form) <= names), None)


def is_box_table(path: Path) -> bool:
    """Whether a CSV's header line names the columns of a box (``BOX_FORMS``: ``filename,width,height,class,xmin,ymin,
    xmax,ymax``; ``patientId,x,y,width,height,Target``; ``image_id,width,height,bbox,source``)."""
    if not path.is_file() or path.suffix.lower() not in TABLE_FILES:
        return False
    if path.suffix.lower() in WORKBOOKS:
        from headstart.errors import DataError
        from headstart.tasks.tables import read_workbook

        try:
            first = read_workbook(path, limit=1)[0]
        except DataError:
            return False
        return bool(first) and box_form(first[0]) is not None
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
    except OSError:
        return False
    return box_form(n.strip().strip('"') for n in header.replace("\t", ",").split(",")) is not None


def box_table_splits(root: Path) -> dict[str, Path]:
    """``{split: its _annotations.csv}`` of a Roboflow TensorFlow CSV export (train/, valid/, test/ folders)."""
    if not root.is_dir():
        return {}
    found = {SPLIT_FOLDERS[d.name.lower()]: d / BOX_TABLE for d in sorted(root.iterdir())
             if d.name.lower() in SPLIT_FOLDERS and is_box_table(d / BOX_TABLE)}
    return {split: found[split] for split in ("train", "val", "test") if split in found}


def box_tables_in(root: Path) -> dict[str, Path]:
    """``{split: table}`` of the tables of boxes in folder ``root`` beside their images (Kaggle's car detection set:
    ``train_solution_bounding_boxes (1).csv`` beside ``training_images/``; the raccoon set's ``data/`` of
    ``train_labels.csv`` and ``test_labels.csv`` beside ``raccoon_labels.csv``): the one table, or those whose names
    say their split (``train``, ``val``, ``test``), one of them train. A submission table (Kaggle's
    ``sample_submission.csv`` of boxes to fill in) is none. {} otherwise."""
    if not root.is_dir():
        return {}
    tables = [p for p in sorted(root.iterdir()) if "submission" not in p.name.lower() and is_box_table(p)]
    if len(tables) == 1:
        return {"train": tables[0]}
    found: dict[str, Path] = {}
    for table in tables:
        words = set(re.split(r"[^a-z]+", table.stem.lower()))
        split = next((SPLIT_FOLDERS[w] for w in ("train", "val", "valid", "validation", "test") if w in words), None)
        if split in found:
            return {}
        if split is not None:  # beside them, a table of all (the raccoon set's raccoon_labels.csv) is left out
            found[split] = table
    return {split: found[split] for split in ("train", "val", "test") if split in found} if "train" in found else {}


def split_exports(root: Path) -> tuple[str, dict[str, Path]] | None:
    """``("coco" | "voc", {split: folder})`` of an export in split folders (``train/``, ``valid/``, ``test/``; also
    each alone in a folder of its own, as Kaggle's fruit detection set unpacks: ``train_zip/train/``) each holding its
    images beside one COCO json (Roboflow's "COCO JSON": ``_annotations.coco.json``) or beside their VOC ``.xml``
    files (Roboflow's "Pascal VOC"), or of one folder of images beside their ``.xml`` files (labelImg saves them so):
    ``{"train": root}``; None otherwise (a YOLO export has its ``data.yaml``)."""
    if not root.is_dir() or any((root / n).exists() for n in ("data.yaml", "dataset.yaml")):
        return None
    folders: dict[str, Path] = {}
    for d in sorted(root.iterdir()):
        wrapped = d.is_dir() and d.name.lower() not in SPLIT_FOLDERS and bool(
            set(re.split(r"[^a-z]+", d.name.lower())) & SPLIT_FOLDERS.keys())  # train_zip/, not a class folder
        inside = [f for f in d.iterdir() if f.is_dir() and not f.name.startswith(".")] if wrapped else []
        if len(inside) == 1:
            d = inside[0]  # train_zip/train/
        if d.is_dir() and d.name.lower() in SPLIT_FOLDERS:
            folders.setdefault(SPLIT_FOLDERS[d.name.lower()], d)
    if "train" not in folders:
        return ("voc", {"train": root}) if xml_beside_images(root) else None
    if len(list(folders["train"].glob("*.json"))) == 1:
        kind, pattern = "coco", "*.json"
    elif any(folders["train"].glob("*.xml")):
        kind, pattern = "voc", "*.xml"
    else:
        return None
    found = {split: d for split, d in folders.items() if any(d.glob(pattern))}
    return kind, {split: found[split] for split in ("train", "val", "test") if split in found}


def xml_beside_images(folder: Path) -> bool:
    """Whether ``folder`` holds images beside their Pascal VOC ``.xml`` files (same stem), as labelImg saves them by
    default: 2 or more, and most of its .xml files an image's."""
    xmls = {p.stem for p in folder.glob("*.xml")}
    if len(xmls) < 2:
        return False
    images = {p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    return len(xmls & images) >= max(2, len(xmls) // 2)


COCO_HEAD = 1_000_000  # characters of a json read to tell a COCO instances file (its images come first)


def is_coco_json(path: Path) -> bool:
    """Whether ``path`` is a COCO instances json, from its first ``COCO_HEAD`` characters: an ``images`` list and its
    ``annotations`` or the images' ``file_name`` (COCO 2017's train json lists 118k images before its annotations)."""
    try:
        with path.open(errors="replace") as f:
            head = f.read(COCO_HEAD)
    except OSError:
        return False
    return head.lstrip().startswith("{") and '"images"' in head and ('"annotations"' in head or '"file_name"' in head)


def coco_files(root: Path) -> list[Path]:
    """The COCO instances jsons of folder ``root``, in it or in its ``annotations/`` (COCO's own layout, CVAT's and
    Label Studio's exports: ``annotations/instances_default.json`` beside ``images/``); ``instances_*`` alone where
    COCO's ``captions_*`` and ``person_keypoints_*`` lie beside them. [] for a file or a folder without any."""
    if not root.is_dir():
        return []
    found = [p for folder in (root, root / "annotations") if folder.is_dir() for p in sorted(folder.glob("*.json"))
             if is_coco_json(p)]
    instances = [p for p in found if p.stem.startswith("instances")]
    return instances or [p for p in found if not p.stem.startswith("captions")]


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
    ``classes.txt`` side by side, or in ``images/`` and ``labels/``; CVAT's "YOLO 1.1": ``obj.names`` beside
    ``obj_train_data/`` of images and their ``.txt`` boxes), when ``root`` is one."""
    if not root.is_dir() or any((root / n).exists() for n in ("data.yaml", "dataset.yaml")):
        return None
    found = next((root / n for n in NAMES_FILES if (root / n).is_file()), None)
    if found is None:
        return None
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return found

    def boxed(folder: Path) -> bool:  # an image's .txt of boxes beside it
        stems = {p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        return any(p.stem in stems for p in folder.glob("*.txt") if p.name not in NAMES_FILES)

    folders = [root, *(d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith("."))]
    return found if any(boxed(f) for f in folders) else None


def objects_column(features: dict[str, Any]) -> str | None:
    """The column of boxes of a dataset's features: a list of objects (or an object of lists) with a ``bbox`` among
    its fields (the ``objects`` of Hugging Face's detection sets)."""
    for name, feature in features.items():
        inner = feature.get("feature", feature) if isinstance(feature, dict) else None
        if isinstance(inner, dict) and "bbox" in inner:
            return name
    return None


def is_parquet_detection(path: str | Path) -> bool:
    """Parquet files (a Hub dataset repository's ``data/``, or one file) of images with an ``objects`` column of
    boxes (``detection.hf_parquet``)."""
    from headstart.tasks.image.hf_datasets import image_column, parquet_features, parquet_splits

    files = parquet_splits(Path(path))
    if not files:
        return False
    features = parquet_features(next(iter(files.values()))[0])
    return image_column(features) is not None and objects_column(features) is not None
