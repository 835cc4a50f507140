"""Label Studio's exports. "JSON": a list of tasks, each its ``data`` (the fields the labelling config names: ``image``,
``text``...) and its ``annotations``, each a ``result`` list (``choices``; ``rectanglelabels``, ``polygonlabels`` in
percent of the image). "JSON-MIN": a record per annotation, the task's data beside each control's result by the
control's name (``"choice": "ants"``, ``"label": [{"x": ..., "rectanglelabels": [...]}]``). A task's latest
annotation that is not cancelled counts; ``predictions`` (a model's pre-labels) are not labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, media_column, region

BOXES = ("rectanglelabels", "polygonlabels")  # results that mark an area: detection


def read_tasks(path: Path, found: list[Any]) -> list[Task]:
    """The tasks of an export's parsed JSON ``found`` (JSON or JSON-MIN)."""
    if is_min(found):
        return read_min(path, found)
    if not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in found):
        raise DataError(f"{path}: not a Label Studio JSON export (a list of tasks, each with 'data' and "
                        "'annotations', or JSON-MIN's records with 'annotation_id')")
    tasks = []
    for number, raw in enumerate(found, 1):
        result = _latest_result(raw)
        task = Task(number, raw["data"], result is not None)
        for item in result or []:
            _read_result(item, task, f"{path.name}: task {number}")
        tasks.append(task)
    return tasks


MIN_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}  # JSON-MIN's own


def is_min(records: list[Any]) -> bool:
    """Whether records are Label Studio's JSON-MIN export: each task's data and, by the name of its control, each
    result (``"sentiment": "Positive"``), with ``annotator`` and ``annotation_id``."""
    return all(isinstance(r, dict) and "annotation_id" in r and "annotator" in r for r in records[:50])


def read_min(path: Path, records: list[dict[str, Any]]) -> list[Task]:
    """JSON-MIN's records as tasks: a field of regions (a list of ``rectanglelabels``...), of several choices
    (``{"choices": [...]}``) or of one choice: a string field of few values (at most half as many as the records,
    not an image), the others the task's data (the image, the text). Every record is an annotation."""
    fields = [k for k in dict.fromkeys(k for r in records for k in r) if k not in MIN_KEYS]
    strings = [k for k in fields if all(isinstance(r.get(k), str) or r.get(k) is None for r in records)]
    media = media_column([Task(0, {k: r.get(k) for k in strings}, True) for r in records[:200]])
    choice = [k for k in strings if k != media and len({r.get(k) for r in records}) <= max(2, len(records) // 2)]
    tasks = []
    for number, record in enumerate(records, 1):
        task = Task(number, {k: record.get(k) for k in strings if k not in choice}, True)
        where = f"{path.name}: record {number}"
        for key in fields:
            value = record.get(key)
            if key in choice and isinstance(value, str) and value.strip():
                task.kinds.append("choices")
                task.choices.append(value.strip())
            elif isinstance(value, dict) and "choices" in value:
                _read_result({"type": "choices", "value": value}, task, where)
            elif isinstance(value, list):
                for item in value:
                    kind = next((k for k in BOXES if isinstance(item, dict) and k in item), None)
                    if kind is not None:
                        _read_result({"type": kind, "value": item, **item}, task, where)
        tasks.append(task)
    return tasks


def _latest_result(raw: dict[str, Any]) -> list[Any] | None:
    """The result of a task's latest annotation that is not cancelled (None: no annotation)."""
    kept = [a for a in raw.get("annotations") or raw.get("completions") or []
            if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    latest = max(enumerate(kept), key=lambda pair: (str(pair[1].get("updated_at") or pair[1].get("created_at") or ""),
                                                    pair[0]))[1]
    result = latest.get("result")
    return result if isinstance(result, list) else []


def _read_result(item: Any, task: Task, where: str) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
        return
    value, kind = item["value"], item.get("type")
    task.kinds.append(str(kind))
    if kind == "choices":
        task.choices += [str(c).strip() for c in value.get("choices") or [] if str(c).strip()]
    elif kind in BOXES:
        labels = [str(c).strip() for c in value.get(kind) or [] if str(c).strip()]
        if not labels:
            raise DataError(f"{where}: a {kind} region without a label")
        points = _points(value, item, kind, where)
        shape = "polygon" if kind == "polygonlabels" else "box"
        task.regions += [r for label in labels if (r := region(label, points, 100, 100, shape)) is not None]


def _points(value: dict[str, Any], item: dict[str, Any], kind: str, where: str) -> list[tuple[float, float]]:
    """A Label Studio region's outline in percent of the image: a polygon's points, a rectangle's corners (turned
    about its top-left corner in pixels, as Label Studio rotates it, when the image's size is given)."""
    try:
        if kind == "polygonlabels":
            points = [(float(x), float(y)) for x, y in value.get("points") or []]
        else:
            x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
            points = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
            angle = math.radians(float(value.get("rotation") or 0))
            if angle:
                sx = float(item.get("original_width") or 100) / 100
                sy = float(item.get("original_height") or 100) / 100
                c, s = math.cos(angle), math.sin(angle)  # about the top-left corner, in pixels
                points = [(x + ((px - x) * sx * c - (py - y) * sy * s) / sx,
                           y + ((px - x) * sx * s + (py - y) * sy * c) / sy) for px, py in points]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: a {kind} region without numbers for its place: {value!r}") from None
    return points
