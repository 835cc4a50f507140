"""CVAT's "CVAT for images 1.1" export (``annotations.xml``): an ``<image>`` per image (``name``, ``width``,
``height``) with its ``<box>``es (``xtl, ytl, xbr, ybr`` in pixels, a ``rotation`` about the centre), ``<polygon>``s
(``points="x,y;x,y..."``) and ``<tag>``s (the image's classes)."""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, region


def read_cvat(path: Path) -> list[Task]:
    """CVAT's ``annotations.xml``: each ``<image>`` a task (``name``: the file), its ``<tag>``s the choices, its
    ``<box>``es (``xtl, ytl, xbr, ybr``, a ``rotation`` about the centre) and ``<polygon>``s the regions."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise DataError(f"{path}: not a readable CVAT export ({exc})") from None
    images = root.findall("image")
    if not images:
        raise DataError(f"{path}: a CVAT export without <image> elements" + (
            " (a video's <track>s are not read: export the task as 'CVAT for images 1.1')" if root.find("track")
            is not None else ""))
    tasks = []
    for number, image in enumerate(images, 1):
        where = f"{path.name}: image {number} ({image.get('name')})"
        try:
            width, height = float(image.get("width") or 0), float(image.get("height") or 0)
        except ValueError:
            width = height = 0.0
        if width <= 0 or height <= 0:
            raise DataError(f"{where}: no width and height")
        task = Task(number, {"image": image.get("name") or ""}, True)
        for element in image:
            label = (element.get("label") or "").strip()
            task.kinds.append("cvat " + element.tag if element.tag == "ellipse" else element.tag)
            if element.tag == "tag" and label:
                task.choices.append(label)
            elif element.tag in ("box", "polygon") and label:
                found = region(label, _points(element, where), width, height, element.tag)
                task.regions += [found] if found is not None else []
        tasks.append(task)
    return tasks


def _points(element: ElementTree.Element, where: str) -> list[tuple[float, float]]:
    """The corners of a CVAT box (turned by its ``rotation`` about its centre) or the points of a polygon, in
    pixels."""
    try:
        if element.tag == "polygon":
            return [(float(x), float(y)) for x, y in (p.split(",") for p in (element.get("points") or "").split(";"))]
        x1, y1, x2, y2 = (float(element.get(k) or "nan") for k in ("xtl", "ytl", "xbr", "ybr"))
    except ValueError:
        raise DataError(f"{where}: a {element.tag} without numbers for its place: {element.attrib}") from None
    if any(math.isnan(v) for v in (x1, y1, x2, y2)):
        raise DataError(f"{where}: a box without xtl, ytl, xbr, ybr: {element.attrib}")
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    angle = math.radians(float(element.get("rotation") or 0))
    if not angle:
        return corners
    cx, cy, c, s = (x1 + x2) / 2, (y1 + y2) / 2, math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in corners]
