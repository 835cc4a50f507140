"""Label Studio's exports. "JSON": a list of tasks, each its ``data`` (the fields the labelling config names: ``image``,
``text``...) and its ``annotations``, each a ``result`` list (``choices``; ``rectanglelabels``, ``polygonlabels`` in
percent of the image; ``brushlabels``: the pixels painted, as ``Brush`` reads them). "JSON-MIN": a record per
annotation, the task's data beside each control's result by the control's name (``"choice": "ants"``, ``"label":
[{"x": ..., "rectanglelabels": [...]}]``). A task's latest annotation that is not cancelled counts; ``predictions`` (a
model's pre-labels) are not labels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.exports.regions import Task, fitted, media_column, pixel_region, region

BOXES = ("rectanglelabels", "polygonlabels")  # results that mark an area by its outline
BRUSH = "brushlabels"  # a result that marks an area by its pixels


@dataclass(frozen=True)
class Brush:
    """A brush region's pixels: ``rle``, the painted layer's RGBA bytes (``size``: height x width x 4) packed as Label
    Studio packs them (thi.ng's rle-pack: 32 bits of the count of values, 5 of the word size less one, four 4-bit
    run-length sizes less one; then tokens, each a bit (1: a run of one value, 0: that many values), 2 bits choosing
    the run-length size, the length less one, the value(s)). A pixel is painted when its alpha is not 0, as Label
    Studio's converter reads it."""

    rle: bytes
    size: tuple[int, int]

    def alpha(self) -> Any:
        """(height, width) uint8: the layer's alpha (ValueError when ``rle`` does not unpack to that many pixels)."""
        import numpy as np

        bits = np.unpackbits(np.frombuffer(self.rle, dtype=np.uint8))
        text = (bits + ord("0")).tobytes().decode()
        at = 0

        def read(n: int) -> int:
            nonlocal at
            if at + n > len(text):
                raise ValueError("its rle ends before its last value")
            at += n
            return int(text[at - n:at], 2)

        count, word = read(32), read(5) + 1
        sizes = [read(4) + 1 for _ in range(4)]
        height, width = self.size
        if count != height * width * 4:
            raise ValueError(f"its rle holds {count} values, not the {height} x {width} x 4 of the image's RGBA pixels")
        out = np.zeros(count, dtype=np.uint32 if word > 8 else np.uint8)
        weights = 1 << np.arange(word - 1, -1, -1, dtype=np.uint64)
        i = 0
        while i < count:
            run = read(1)
            end = min(i + 1 + read(sizes[read(2)]), count)
            if run:
                out[i:end] = read(word)
            else:  # literal values, read at once
                n = (end - i) * word
                if at + n > len(bits):
                    raise ValueError("its rle ends before its last value")
                out[i:end] = bits[at:at + n].reshape(end - i, word).astype(np.uint64) @ weights
                at += n
            i = end
        return out.reshape(height, width, 4)[..., 3]

    def mask(self, height: int, width: int) -> Any:
        """(height, width) bool mask of an image of that size (the result's, else resized to it, nearest)."""
        return fitted(self.alpha() > 0, height, width)


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
                    kind = next((k for k in (*BOXES, BRUSH) if isinstance(item, dict) and k in item), None)
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
    elif kind in (*BOXES, BRUSH):
        labels = [str(c).strip() for c in value.get(kind) or [] if str(c).strip()]
        if not labels:
            raise DataError(f"{where}: a {kind} region without a label")
        if kind == BRUSH:
            task.regions += _brush(value, item, labels, where)
            return
        points = _points(value, item, kind, where)
        shape = "polygon" if kind == "polygonlabels" else "box"
        task.regions += [r for label in labels if (r := region(label, points, 100, 100, shape)) is not None]


def _brush(value: dict[str, Any], item: dict[str, Any], labels: list[str], where: str) -> list:
    """A brush result's regions (one per label; none when nothing is painted)."""
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise DataError(f"{where}: a brushlabels region without its 'rle' list (format {value.get('format')!r})")
    try:
        packed = bytes(value["rle"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: a brushlabels region whose rle is not a list of bytes (0-255)") from None
    try:
        brush = Brush(packed, (int(item["original_height"]), int(item["original_width"])))
        painted = brush.alpha() > 0
    except (KeyError, TypeError) as exc:
        raise DataError(f"{where}: a brushlabels region without the image's original_width and original_height "
                        f"({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        raise DataError(f"{where}: a brushlabels region that Label Studio's packing does not read: {exc}") from None
    return [r for label in labels if (r := pixel_region(label, painted, brush)) is not None]


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
