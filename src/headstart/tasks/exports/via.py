"""The VGG Image Annotator's (VIA) JSON: the Mask R-CNN balloon tutorial's ``via_region_data.json``, a VIA 2 project's
``_via_img_metadata``. Per image its ``filename`` and ``regions`` (``rect``, ``polygon``, ``circle``, ``ellipse`` in
pixels; the label the region's first attribute, ``object`` without one), its ``file_attributes`` a class."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, region


def via_images(data: Any) -> list[dict[str, Any]] | None:
    """The per-image entries of a VIA export (a VIA 2 project keeps them in ``_via_img_metadata``), else None."""
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not data:
        return None
    entries = list(data.values())
    if not all(isinstance(e, dict) and "filename" in e and "regions" in e for e in entries[:50]):
        return None
    return entries


def read_via(path: Path, data: dict[str, Any]) -> list[Task]:
    """VIA's images as tasks: the ``filename`` (beside the export, or found by name under its folder), the regions'
    boxes as fractions of the image (its size read from the file's header), the first file attribute a choice."""
    from headstart.tasks.image.decode import image_header
    from headstart.tasks.tables import table_files

    entries = via_images(data) or []
    files, _ = table_files(path, [str(e.get("filename") or "") for e in entries])
    tasks = []
    for number, (entry, file) in enumerate(zip(entries, files), 1):
        task = Task(number, {"image": str(entry.get("filename") or "")}, True)
        task.choices += _attribute_labels(entry.get("file_attributes"))
        regions = entry.get("regions") or []
        regions = list(regions.values()) if isinstance(regions, dict) else regions  # VIA 1's regions by number
        if regions and file.is_file():
            try:
                _, width, height = image_header(file)
            except Exception:  # noqa: BLE001 - an unreadable image is reported where it is read
                width = height = 0
            for entry_region in regions:
                drawn = entry_region if isinstance(entry_region, dict) else {}
                shape = drawn.get("shape_attributes") or {}
                task.kinds.append(str(shape.get("name")))
                points = _points(shape, f"{path.name}: {entry.get('filename')}")
                if points and width and height:
                    label = (_attribute_labels(drawn.get("region_attributes")) or [DEFAULT_LABEL])[0]
                    kind = "box" if shape.get("name") == "rect" else "polygon"
                    found = region(label, points, width, height, kind)
                    task.regions += [found] if found is not None else []
        tasks.append(task)
    return tasks


CIRCLE_POINTS = 32  # a circle or an ellipse drawn as a polygon of this many corners
DEFAULT_LABEL = "object"  # the class of a VIA region without attributes (the balloon set's: one class)


def _attribute_labels(attributes: Any) -> list[str]:
    """The labels VIA attributes give: a text or dropdown value (``{"name": "balloon"}``), the checked options of a
    checkbox (``{"kind": {"cat": true}}``); none for an empty one."""
    found: list[str] = []
    for value in (attributes or {}).values() if isinstance(attributes, dict) else ():
        if isinstance(value, str) and value.strip():
            found.append(value.strip())
        elif isinstance(value, dict):
            found += [str(k).strip() for k, on in value.items() if on and str(k).strip()]
        if found:
            break
    return found


def _points(shape: dict[str, Any], where: str) -> list[tuple[float, float]]:
    """The outline of a VIA region in pixels (a point or a line marks no area: none)."""
    name = shape.get("name")
    try:
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        if name == "polygon":
            return list(zip(map(float, shape["all_points_x"]), map(float, shape["all_points_y"])))
        if name in ("circle", "ellipse"):
            cx, cy = float(shape["cx"]), float(shape["cy"])
            rx, ry = (float(shape["r"]),) * 2 if name == "circle" else (float(shape["rx"]), float(shape["ry"]))
            turn = float(shape.get("theta") or 0)  # an ellipse's turn, in radians
            angles = [2 * math.pi * i / CIRCLE_POINTS for i in range(CIRCLE_POINTS)]
            return [(cx + rx * math.cos(a) * math.cos(turn) - ry * math.sin(a) * math.sin(turn),
                     cy + rx * math.cos(a) * math.sin(turn) + ry * math.sin(a) * math.cos(turn)) for a in angles]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: a VIA {name} region without numbers for its place: {shape!r}") from None
    return []
