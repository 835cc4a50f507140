"""Apple's Create ML object detection JSON (``_annotations.createml.json`` in Roboflow's "CreateML JSON" export): a
list of images, each its ``image`` (a file name beside the export) and ``annotations``, each a ``label`` and
``coordinates``: the box's centre ``x``, ``y`` and its ``width``, ``height`` in pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, image_size, region


def is_createml(data: Any) -> bool:
    """Whether parsed JSON is a Create ML annotation list (``image`` and ``annotations`` in every entry)."""
    return isinstance(data, list) and bool(data) and all(
        isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("annotations"), list)
        for e in data[:50])


def read_createml(path: Path, data: list[dict[str, Any]]) -> list[Task]:
    """The images as tasks: each box as fractions of its image (the size read from the file's header); an image
    without annotations holds no object."""
    from headstart.tasks.tables import table_files

    files, _ = table_files(path, [e["image"] for e in data])
    tasks = []
    for number, (entry, file) in enumerate(zip(data, files), 1):
        task = Task(number, {"image": entry["image"]}, True)
        width, height = image_size(file) if entry["annotations"] else (0, 0)
        for annotation in entry["annotations"]:
            task.kinds.append("rectangle")
            try:
                label = str(annotation["label"]).strip()
                box = annotation["coordinates"]
                cx, cy, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path.name}: image {number} ({entry['image']}): an annotation without a label and "
                                f"coordinates x, y, width, height: {annotation!r}") from None
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            found = region(label, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)], width, height, "box") if width else None
            task.regions += [found] if found is not None and label else []
        tasks.append(task)
    return tasks
