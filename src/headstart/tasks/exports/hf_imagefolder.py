"""Hugging Face's ``imagefolder`` metadata for object detection (``load_dataset("imagefolder", data_dir=...)``, as the
``datasets`` guide to object detection sets lay it out): a ``metadata.jsonl`` beside the images, an object a line,
its ``file_name`` and ``objects``: the boxes in COCO's form (``bbox``: ``[x, y, width, height]`` in pixels) with
their ``categories`` (or ``category``: names, or class indices as written), or a list of objects each a ``bbox`` and
a ``category``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, image_size, region

CATEGORY_KEYS = ("categories", "category", "labels", "label", "class")  # the objects' classes, as sets name them
HEAD = 1 << 16  # characters read to tell such metadata from other JSON Lines


def is_hf_objects(path: Path) -> bool:
    """Whether a ``.jsonl`` file's first object is an image's boxes: a ``file_name`` and ``objects`` holding ``bbox``."""
    if not path.is_file() or path.suffix.lower() != ".jsonl":
        return False
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")[:HEAD]
        row = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and "file_name" in row and boxes_of(row.get("objects")) is not None


def boxes_of(objects: Any) -> list[tuple[Any, Any]] | None:
    """``[(bbox, category), ...]`` of an ``objects`` value (a dict of lists or a list of dicts); None when it holds
    no ``bbox``."""
    if isinstance(objects, dict) and "bbox" in objects:
        key = next((k for k in CATEGORY_KEYS if k in objects), None)
        boxes = objects["bbox"] or []
        categories = objects[key] if key else [None] * len(boxes)
        return list(zip(boxes, categories)) if len(categories) == len(boxes) else [(b, None) for b in boxes]
    if isinstance(objects, list) and all(isinstance(o, dict) and "bbox" in o for o in objects):
        return [(o["bbox"], next((o[k] for k in CATEGORY_KEYS if k in o), None)) for o in objects]
    return None


def coco_boxes(boxes: list[tuple[Any, Any]], where: str, names: list[str] | None = None
               ) -> list[tuple[str, tuple[float, float, float, float]]]:
    """``[(label, (x, y, width, height)), ...]`` of ``boxes_of``'s pairs: a category as its name (a ClassLabel index
    as one of ``names``); a bbox that is not four numbers, or a box without a category, is an error naming ``where``."""
    out = []
    for bbox, category in boxes:
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise DataError(f"{where}: a bbox is not four numbers [x, y, width, height]: {bbox!r}") from None
        if category is None or str(category).strip() == "":
            raise DataError(f"{where}: a box without a category ('categories' or 'category' beside 'bbox')")
        if names is not None and isinstance(category, int) and not isinstance(category, bool):
            if not 0 <= category < len(names):
                raise DataError(f"{where}: category {category} is none of the {len(names)} ClassLabel names")
            category = names[category]
        out.append((str(category).strip(), (x, y, w, h)))
    return out


def read_hf_objects(path: Path) -> list[Task]:
    """The images as tasks: each box as fractions of its image (the size read from the file's header); an image
    without objects holds none. A box without a category, or not four numbers, is an error naming its line."""
    from headstart.tasks.tables import json_rows, read_text, table_files

    rows = json_rows(path, read_text(path).text)
    files, _ = table_files(path, [str(r.get("file_name") or "") for r in rows])
    tasks = []
    for number, (row, file) in enumerate(zip(rows, files), 1):
        task = Task(number, {"image": str(row.get("file_name") or "")}, True)
        boxes = boxes_of(row.get("objects"))
        if boxes is None:
            raise DataError(f"{path}:{number}: expected 'objects' holding 'bbox' and 'categories' lists, found "
                            f"{str(row.get('objects'))[:100]!r}")
        width, height = image_size(file) if boxes else (0, 0)
        for label, (x, y, w, h) in coco_boxes(boxes, f"{path}:{number} ({task.data['image']})"):
            task.kinds.append("rectangle")
            found = region(label, [(x, y), (x + w, y), (x + w, y + h), (x, y + h)], width, height, "box") \
                if width else None
            task.regions += [found] if found is not None else []
        tasks.append(task)
    return tasks
