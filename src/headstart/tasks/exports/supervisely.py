"""Supervisely's project format, as Supervisely and Dataset Ninja download datasets: ``meta.json`` (the project's
classes) beside a folder per dataset, each holding ``img/`` (the images) and ``ann/`` (``NAME.json`` per image
``NAME``: its ``size``, its ``tags`` (the image's classes) and its ``objects``, each a ``classTitle``, a
``geometryType`` and ``points.exterior`` in pixels). Rectangles and polygons are regions; bitmaps, points and lines
are named, not read."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, region

META = "meta.json"


def datasets(folder: Path) -> dict[str, Path]:
    """``{name: folder}`` of a Supervisely project's datasets (folders of ``img/`` and ``ann/`` beside ``meta.json``
    with its ``classes``); {} for any other folder."""
    meta = folder / META
    if not meta.is_file():
        return {}
    try:
        found = json.loads(meta.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(found, dict) or "classes" not in found:
        return {}
    return {d.name: d for d in sorted(folder.iterdir()) if (d / "ann").is_dir() and (d / "img").is_dir()}


def read_supervisely(path: Path) -> list[Task]:
    """The images of a project (every dataset) or of one dataset folder, as tasks: the image's path, its tags (the
    choices) and its rectangles and polygons (the regions)."""
    sets = [path] if (path / "ann").is_dir() else list(datasets(path).values())
    tasks: list[Task] = []
    for folder in sets:
        for ann in sorted((folder / "ann").glob("*.json")):
            try:
                found = json.loads(ann.read_text(encoding="utf-8-sig"))
                height, width = float(found["size"]["height"]), float(found["size"]["width"])
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                raise DataError(f"{ann}: not a readable Supervisely annotation (a 'size' of 'height' and 'width', "
                                "'objects')") from None
            task = Task(len(tasks) + 1, {"image": str(folder / "img" / ann.name[:-len(".json")])}, True)
            task.choices += [str(t["name"]).strip() for t in found.get("tags") or []
                             if isinstance(t, dict) and str(t.get("name") or "").strip()]
            for obj in found.get("objects") or []:
                kind, label = str(obj.get("geometryType")), str(obj.get("classTitle") or "").strip()
                task.kinds.append(kind)
                if kind not in ("rectangle", "polygon") or not label:
                    continue
                try:
                    points = [(float(x), float(y)) for x, y in obj["points"]["exterior"]]
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{ann}: a {kind} without points.exterior of [x, y] pairs") from None
                if kind == "rectangle" and len(points) == 2:
                    (x1, y1), (x2, y2) = points
                    points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
                found_region = region(label, points, width, height, "box" if kind == "rectangle" else "polygon")
                task.regions += [found_region] if found_region is not None else []
            tasks.append(task)
    return tasks
