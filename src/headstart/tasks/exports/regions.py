"""What a labelling tool's export holds, as the readers of ``exports`` give it: tasks (an image or a text each), their
choices and the regions they mark."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from headstart.tasks.tables import IMAGE_SUFFIXES


@dataclass
class Region:
    """An area a task's annotation marks: its label, its outline ``[(x, y), ...]`` as fractions of the image (a
    rectangle's four corners, a polygon's points, a bitmap's box), and ``kind``: ``box``, ``polygon`` or ``bitmap``
    (``pixels``: what gives its ``mask(height, width)``, a (height, width) bool array of the image)."""

    label: str
    outline: list[tuple[float, float]]
    kind: str = "box"
    pixels: Any = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` around the outline, as fractions of the image."""
        xs, ys = [x for x, _ in self.outline], [y for _, y in self.outline]
        return (min(xs), min(ys), max(xs), max(ys))


def fitted(mask: Any, height: int, width: int) -> Any:
    """A (rows, cols) bool mask as one of an image of ``height`` x ``width`` (resized, nearest, when they differ)."""
    if mask.shape == (height, width):
        return mask
    import numpy as np
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))


def pixel_region(label: str, mask: Any, pixels: Any) -> Region | None:
    """A region of the pixels of a (height, width) bool ``mask`` (its outline: the box around them), drawn again from
    ``pixels`` (what gives ``mask(height, width)``); None for a mask of no pixel."""
    import numpy as np

    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    height, width = mask.shape
    x1, y1, x2, y2 = cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height
    return Region(label, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)], "bitmap", pixels)


def image_size(file: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header; ``(0, 0)`` when it is missing or unreadable (reported
    where it is read)."""
    from headstart.tasks.image.decode import image_header

    if not file.is_file():
        return 0, 0
    try:
        _, width, height = image_header(file)
    except Exception:  # noqa: BLE001 - an unreadable image is reported where it is read
        return 0, 0
    return width, height


def region(label: str, points: list[tuple[float, float]], width: float, height: float, kind: str) -> Region | None:
    """A region of points in pixels of a ``width`` x ``height`` image (100 x 100: percent); None for fewer points
    than an area has."""
    if len(points) < (3 if kind == "polygon" else 2):
        return None
    return Region(label, [(x / width, y / height) for x, y in points], kind)


# the results and shapes of the exports that are read (a CVAT <ellipse> is not)
READ_KINDS = {"choices", "rectanglelabels", "polygonlabels", "brushlabels", "box", "polygon", "tag", "rect", "circle",
              "ellipse", "rectangle", "bitmap"}


@dataclass
class Task:
    """One task: its number in the export (from 1), its data, and its latest annotation's choices and regions
    (``annotated``: whether it has an annotation at all)."""

    number: int
    data: dict[str, Any]
    annotated: bool
    choices: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # the types of its annotation's results (choices, labels...)

    @property
    def unread(self) -> int:
        """Its marks that are no area headstart reads (points, lines, key points, brushes...)."""
        return sum(k not in READ_KINDS for k in self.kinds)


def media_column(tasks: list[Task]) -> str | None:
    """The data field that names each task's image (a path or URL with an image suffix, or a Label Studio upload);
    None for tasks of texts."""
    for key in dict.fromkeys(k for t in tasks for k in t.data):
        values = [str(t.data.get(key) or "") for t in tasks[:200]]
        if values and all(_names_media(v) for v in values if v) and any(values):
            return key
    return None


def _names_media(value: str) -> bool:
    return (value.startswith("/data/") or "://" in value[:12]
            or Path(urlparse(value).path).suffix.lower() in IMAGE_SUFFIXES)
