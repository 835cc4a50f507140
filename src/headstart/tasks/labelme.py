"""LabelMe's annotations, as people who draw their own boxes and outlines save them: a ``.json`` beside each image
with ``shapes`` (each a ``label``, a ``shape_type`` and ``points`` in pixels), ``imagePath``, ``imageWidth`` and
``imageHeight``; a folder of them, or its ``train/``, ``val/`` (``valid/``) and ``test/`` folders. Detection reads the
shapes' boxes (``detection/labelme.py``), segmentation their areas (``segmentation/data.py``). Imports no torch.

Area shapes: a ``rectangle`` (two corners), a ``polygon``, a ``circle`` (its centre and a point on it) and a ``mask``
(LabelMe 5: the rectangle it is drawn in). Points and lines mark no area: they are left out and counted. The image is
``imagePath`` (relative to the ``.json``, Windows separators too), else the image of the same name beside it; an image
embedded only as ``imageData`` is not read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from headstart.errors import DataError
from headstart.tasks.image.decode import image_beside, image_header
from headstart.tasks.tables import SPLIT_FOLDERS

AREAS = ("rectangle", "polygon", "circle", "mask")
ISSUE_NOT_AREAS = "LabelMe shapes that mark no area (points, lines), left out"
ISSUE_UNANNOTATED = "images without a LabelMe .json (not annotated yet), not read"
CIRCLE_POINTS = 32  # a circle drawn as a polygon of this many corners


def is_labelme_file(path: Path) -> bool:
    """Whether a ``.json`` file is a LabelMe annotation (an object with ``shapes`` and ``imagePath``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        if '"shapes"' not in text[: 1 << 16]:
            return False
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def labelme_splits(root: Path) -> dict[str, Path]:
    """``{split: folder}`` of LabelMe annotations: the folder itself (``train``), or its ``train/``, ``val/``
    (``valid/``), ``test/`` folders holding them; {} otherwise. One file a folder is looked at."""
    if not root.is_dir():
        return {}

    def holds(folder: Path) -> bool:
        first = next(iter(sorted(folder.glob("*.json"))), None)
        return first is not None and is_labelme_file(first)

    if holds(root):
        return {"train": root}
    found = {SPLIT_FOLDERS[d.name.lower()]: d for d in sorted(root.iterdir())
             if d.is_dir() and d.name.lower() in SPLIT_FOLDERS and holds(d)}
    return {split: found[split] for split in ("train", "val", "test") if split in found} if "train" in found else {}


@dataclass
class Shape:
    label: str
    kind: str  # LabelMe's shape_type
    points: list[tuple[float, float]]
    where: str  # the file and the shape's number, for errors

    def box(self) -> list[float] | None:
        """``[x1, y1, x2, y2]`` in pixels around the shape; None for points and lines."""
        outline = self.outline()
        if outline is None:
            return None
        xs, ys = outline[0::2], outline[1::2]
        return [min(xs), min(ys), max(xs), max(ys)]

    def outline(self) -> list[float] | None:
        """The area as a polygon ``[x1, y1, x2, y2, ...]`` in pixels (COCO's form); None for points and lines."""
        if self.kind not in AREAS:
            return None
        if self.kind == "circle":
            if len(self.points) != 2:
                raise DataError(f"{self.where}: a circle is its centre and a point on it; found {len(self.points)} "
                                "points")
            (cx, cy), (px, py) = self.points
            r = math.hypot(px - cx, py - cy)
            angles = (2 * math.pi * i / CIRCLE_POINTS for i in range(CIRCLE_POINTS))
            return [v for a in angles for v in (cx + r * math.cos(a), cy + r * math.sin(a))]
        if len(self.points) < 2 or (self.kind == "polygon" and len(self.points) < 3):
            raise DataError(f"{self.where}: a {self.kind} of {len(self.points)} point(s)")
        if self.kind in ("rectangle", "mask"):
            (x1, y1), (x2, y2) = self.points[0], self.points[1]
            x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
            return [x1, y1, x2, y1, x2, y2, x1, y2]
        return [v for point in self.points for v in point]


@dataclass
class LabelmeFile:
    """One LabelMe annotation: the file, its image and that image's size, and its shapes."""

    path: Path
    image: Path
    width: float
    height: float
    shapes: list[Shape] = field(default_factory=list)


def read_file(path: Path) -> LabelmeFile:
    """One LabelMe file (DataError naming it when it cannot be read, a shape has no label, or its image is missing)."""
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
    out = LabelmeFile(path, image, width, height)
    for number, shape in enumerate(data.get("shapes") or [], 1):
        where = f"{path}: shape {number}"
        label = str(shape.get("label") or "").strip() if isinstance(shape, dict) else ""
        if not label:
            raise DataError(f"{where} has no label")
        try:
            points = [(float(x), float(y)) for x, y in shape.get("points") or []]
        except (TypeError, ValueError):
            raise DataError(f"{where}: its points are not [x, y] pairs of numbers: {shape.get('points')!r}") from None
        out.shapes.append(Shape(label, shape.get("shape_type") or "polygon", points, where))  # LabelMe's default
    return out


def unannotated(folder: Path, files: list[LabelmeFile]) -> int:
    """The images in ``folder`` that no LabelMe file of it annotates."""
    from headstart.tasks.image.decode import is_image_file

    stems = {f.path.stem for f in files} | {f.image.stem for f in files}
    return sum(1 for p in folder.iterdir() if is_image_file(p) and p.stem not in stems)
