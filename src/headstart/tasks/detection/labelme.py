"""LabelMe's annotations, as people who draw their own boxes save them: a ``.json`` beside each image with
``shapes`` (each a ``label``, a ``shape_type`` and ``points`` in pixels), ``imagePath``, ``imageWidth`` and
``imageHeight``. A folder of them, or its ``train/``, ``val/`` (``valid/``) and ``test/`` folders.

A ``rectangle`` is its two corners; a ``polygon``'s box is the one around its points, a ``circle``'s the one around
it (its centre and a point on it); ``mask`` shapes (LabelMe 5) give the box they are drawn in. Points and lines mark
no area: they are left out and counted. Images without a ``.json`` are not annotated yet: not read, counted. The
image is ``imagePath`` (relative to the ``.json``, Windows separators too), else the image of the same name beside it;
an image embedded only as ``imageData`` is not read.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

from headstart.errors import DataError
from headstart.tasks.detection import labelme_splits
from headstart.tasks.detection.data import (
    ISSUE_BACKGROUND,
    DetectionSplits,
    DetSample,
    fix_boxes,
    random_split,
)
from headstart.tasks.image.decode import image_beside, image_header, is_image_file

ISSUE_NOT_AREAS = "LabelMe shapes that mark no area (points, lines), left out"
ISSUE_UNANNOTATED = "images without a LabelMe .json (not annotated yet), not read"
AREAS = ("rectangle", "polygon", "circle", "mask")


def _box(shape: dict, where: str) -> list[float] | None:
    """``[x1, y1, x2, y2]`` in pixels of an area shape; None for points and lines."""
    kind = shape.get("shape_type") or "polygon"  # LabelMe's own default
    if kind not in AREAS:
        return None
    try:
        points = [(float(x), float(y)) for x, y in shape.get("points") or []]
    except (TypeError, ValueError):
        raise DataError(f"{where}: its points are not [x, y] pairs of numbers: {shape.get('points')!r}") from None
    if kind == "circle":
        if len(points) != 2:
            raise DataError(f"{where}: a circle is its centre and a point on it; found {len(points)} points")
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        return [cx - r, cy - r, cx + r, cy + r]
    if len(points) < 2:
        raise DataError(f"{where}: a {kind} of {len(points)} point(s)")
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def read_annotation(path: Path, issues: Counter) -> tuple[Path, list[str], torch.Tensor]:
    """The image of one LabelMe file, its shapes' labels and their boxes (``xyxy`` normalised)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable LabelMe file ({exc})") from None
    given = str(data.get("imagePath") or "").replace("\\", "/")
    image = path.parent / given if given else None
    if image is None or not image.is_file():
        image = image_beside(path.parent, path.stem) or image_beside(path.parent, Path(given).stem) or image
    if image is None or not image.is_file():
        raise DataError(f"{path}: its image {image or path.stem + '.*'} does not exist (an image embedded as imageData "
                        "is not read: keep the image files beside their .json)")
    width, height = data.get("imageWidth"), data.get("imageHeight")
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        _, width, height = image_header(image)
    names, boxes = [], []
    for number, shape in enumerate(data.get("shapes") or [], 1):
        where = f"{path}: shape {number}"
        label = str(shape.get("label") or "").strip() if isinstance(shape, dict) else ""
        if not label:
            raise DataError(f"{where} has no label")
        box = _box(shape, where)
        if box is None:
            issues[ISSUE_NOT_AREAS] += 1
            continue
        names.append(label)
        boxes.append([box[0] / width, box[1] / height, box[2] / width, box[3] / height])
    return image, names, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def read_labelme(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """A folder of LabelMe files (or its split folders); a seeded validation split when none is given."""
    root = Path(data)
    folders = labelme_splits(root)
    if not folders:
        raise DataError(f"{data}: expected LabelMe annotations (a .json with 'shapes' beside each image)")
    issues: Counter = Counter()
    read: dict[str, list[tuple[Path, list[str], torch.Tensor]]] = {}
    for split, folder in folders.items():
        files = sorted(folder.glob("*.json"))
        read[split] = [read_annotation(f, issues) for f in files]
        stems = {f.stem for f in files} | {image.stem for image, _, _ in read[split]}
        issues[ISSUE_UNANNOTATED] += sum(1 for p in folder.iterdir() if is_image_file(p) and p.stem not in stems)
    classes = sorted({n for items in read.values() for _, names, _ in items for n in names})
    if not classes:
        raise DataError(f"{data}: no labelled area shape (rectangle, polygon, circle) in its LabelMe files")
    where = ", ".join(f"{folder.name}/ {len(read[split])}" for split, folder in folders.items()) \
        if len(folders) > 1 or folders.get("train") != root else f"{len(read['train'])} files"
    splits = DetectionSplits(classes, [], [], layout=f"LabelMe {root.name} ({where})", issues=issues)
    for split, items in read.items():
        for image, names, boxes in items:
            if not names:
                issues[ISSUE_BACKGROUND] += 1
            labels = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
            getattr(splits, split).append(DetSample(image, *fix_boxes(boxes, labels, issues)))
    if not splits.val:
        random_split(splits, val_fraction, seed)
    for key in [k for k, v in issues.items() if not v]:
        del issues[key]
    return splits
