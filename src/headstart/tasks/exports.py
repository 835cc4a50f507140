"""Exports of labelling tools, as people who label their own data save them. Imports no torch.

Label Studio's JSON export (its Export dialog's "JSON"): a list of tasks, each its ``data`` (the fields the labelling
config names: ``image``, ``text``...) and its ``annotations``, each a ``result`` list; or its "JSON-MIN": a record per
annotation, the task's data beside each control's result by the control's name (``"choice": "ants"``, ``"label":
[{"x": ..., "rectanglelabels": [...]}]``). CVAT's "CVAT for images 1.1" (``annotations.xml``): an ``<image>`` per
image with its ``<box>``, ``<polygon>`` and ``<tag>`` elements, in pixels. The VGG Image Annotator's (VIA) JSON
(``via_region_data.json`` of the Mask R-CNN balloon tutorial, a VIA 2 project's ``_via_img_metadata``): per image its
``filename`` and ``regions`` (``rect``, ``polygon``, ``circle``, ``ellipse`` in pixels; the label the region's first
attribute, ``object`` without one), its ``file_attributes`` a class.

Classification (Label Studio's ``choices``, CVAT's tags) is read as a table (``as_table``): the data fields and a
``label`` column (the choice; several choices ``a;b``: multi-label), so image, multi-label and text classification
read it as they read any table. Detection (rectangles and boxes, and polygons as the box around them) is read as
``regions``: boxes as fractions of the image, rotated ones as the box around them. A Label Studio task's latest
annotation that is not cancelled counts; ``predictions`` (a model's pre-labels) are not labels, and tasks without an
annotation (not labelled yet) are left out and counted. An image is the file of its name under the export's folder:
``/data/upload/3/8d5e3f2a-photo.jpg``, an upload that Label Studio named with 8 hex digits before the user's file name,
is ``photo.jpg`` unless a file keeps the whole name; ``/data/local-files/?d=photos/photo.jpg`` is
``photos/photo.jpg``; a URL is its last part.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from xml.etree import ElementTree

from headstart.errors import DataError
from headstart.tasks.tables import IMAGE_SUFFIXES, Table

LABEL_COLUMN = "label"  # the column of each task's choice(s) in ``as_table``
UPLOADED = re.compile(r"[0-9a-f]{8}-(?P<name>.+)")  # Label Studio's name for an uploaded file: 8 hex digits, '-'
BOXES = ("rectanglelabels", "polygonlabels")  # results that mark an area: detection
HEAD = 1 << 16  # characters looked at to tell an export from other JSON
EXPORTS_LOOKED_AT = 20  # .json / .xml files of a folder looked into for its one export, at most
INDEX_LIMIT = 500_000  # files listed under the export's folder to find uploads by their own names


@dataclass
class Region:
    """An area a task's annotation marks: its label, its outline ``[(x, y), ...]`` as fractions of the image (a
    rectangle's four corners, a polygon's points), and ``kind``: ``box`` or ``polygon``."""

    label: str
    outline: list[tuple[float, float]]
    kind: str = "box"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` around the outline, as fractions of the image."""
        xs, ys = [x for x, _ in self.outline], [y for _, y in self.outline]
        return (min(xs), min(ys), max(xs), max(ys))


def _region(label: str, points: list[tuple[float, float]], width: float, height: float, kind: str) -> Region | None:
    """A region of points in pixels of a ``width`` x ``height`` image (100 x 100: percent); None for fewer points
    than an area has."""
    if len(points) < (3 if kind == "polygon" else 2):
        return None
    return Region(label, [(x / width, y / height) for x, y in points], kind)


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


def is_export(path: Path) -> bool:
    """Whether ``path`` is a labelling tool's export: Label Studio's ``.json`` list of tasks with ``data`` and
    ``annotations`` (``completions`` before version 1.0) or JSON-MIN records, or CVAT's ``.xml`` of ``<image>``s."""
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in (".json", ".xml"):
        return False
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            head = f.read(HEAD)
    except OSError:
        return False
    if suffix == ".xml":
        return "<annotations>" in head and ("<image " in head or "<track " in head)
    if head.lstrip().startswith("{"):
        return '"filename"' in head and '"regions"' in head and _via_images(_load(path)) is not None
    full = '"data"' in head and ('"annotations"' in head or '"completions"' in head)
    if not head.lstrip().startswith("[") or not (full or ('"annotation_id"' in head and '"annotator"' in head)):
        return False
    tasks = _load(path)
    return (isinstance(tasks, list) and bool(tasks) and isinstance(tasks[0], dict)
            and (isinstance(tasks[0].get("data"), dict) or _is_min(tasks)))


def tool_of(path: Path) -> str:
    """The tool an export comes from, as messages name it."""
    if path.suffix.lower() == ".xml":
        return "CVAT"
    return "VIA" if isinstance(_load(path), dict) else "Label Studio"


MIN_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}  # JSON-MIN's own


def _is_min(records: list[Any]) -> bool:
    """Whether records are Label Studio's JSON-MIN export: each task's data and, by the name of its control, each
    result (``"sentiment": "Positive"``), with ``annotator`` and ``annotation_id``."""
    return all(isinstance(r, dict) and "annotation_id" in r and "annotator" in r for r in records[:50])


def export_in(folder: Path) -> Path | None:
    """The one export among the ``.json`` and ``.xml`` files of ``folder`` (its images beside it: CVAT's
    ``annotations.xml`` beside ``images/``), else None."""
    if not folder.is_dir():
        return None
    candidates = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".json", ".xml")]
    if len(candidates) > EXPORTS_LOOKED_AT:  # a file per image (LabelMe's .json, labelImg's .xml): not one export
        return None
    found = [p for p in candidates if is_export(p)]
    return found[0] if len(found) == 1 else None


SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def export_splits(folder: Path) -> dict[str, Path]:
    """``{split: export}``: the folder's one export (``train``), or one in each of its ``train/``, ``val/`` (``valid/``)
    and ``test/`` folders (the balloon set's ``train/via_region_data.json`` and ``val/via_region_data.json``); {}
    without one for training."""
    if not folder.is_dir():
        return {}
    alone = export_in(folder)
    if alone is not None:
        return {"train": alone}
    found = {SPLIT_FOLDERS[d.name.lower()]: e for d in sorted(folder.iterdir())
             if d.is_dir() and d.name.lower() in SPLIT_FOLDERS and (e := export_in(d)) is not None}
    return found if "train" in found else {}


def _load(path: Path) -> list[Any] | dict[str, Any] | None:
    """The parsed export (read once while the file is unchanged: the task is inferred, then the data read)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _parsed(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int) -> list[Any] | dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, (list, dict)) else None


def read_tasks(path: Path) -> list[Task]:
    """The tasks of an export (DataError naming it when it is not one)."""
    if path.suffix.lower() == ".xml":
        return _cvat_tasks(path)
    found = _load(path)
    if isinstance(found, dict):
        return _via_tasks(path, found)
    if found and _is_min(found):
        return _min_tasks(path, found)
    if not found or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in found):
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


def _cvat_tasks(path: Path) -> list[Task]:
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
            task.kinds.append(element.tag)
            if element.tag == "tag" and label:
                task.choices.append(label)
            elif element.tag in ("box", "polygon") and label:
                region = _region(label, _cvat_points(element, where), width, height, element.tag)
                task.regions += [region] if region is not None else []
        tasks.append(task)
    return tasks


def _cvat_points(element: ElementTree.Element, where: str) -> list[tuple[float, float]]:
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


def _via_images(data: Any) -> list[dict[str, Any]] | None:
    """The per-image entries of a VIA export (a VIA 2 project keeps them in ``_via_img_metadata``), else None."""
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not data:
        return None
    entries = list(data.values())
    if not all(isinstance(e, dict) and "filename" in e and "regions" in e for e in entries[:50]):
        return None
    return entries


def _via_tasks(path: Path, data: dict[str, Any]) -> list[Task]:
    """VIA's images as tasks: the ``filename`` (beside the export, or found by name under its folder), the regions'
    boxes as fractions of the image (its size read from the file's header), the first file attribute a choice."""
    from headstart.tasks.image.decode import image_header
    from headstart.tasks.tables import table_files

    entries = _via_images(data) or []
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
            for region in regions:
                region = region if isinstance(region, dict) else {}
                shape = region.get("shape_attributes") or {}
                task.kinds.append(str(shape.get("name")))
                points = _via_points(shape, f"{path.name}: {entry.get('filename')}")
                if points and width and height:
                    label = (_attribute_labels(region.get("region_attributes")) or [DEFAULT_LABEL])[0]
                    kind = "box" if shape.get("name") == "rect" else "polygon"
                    found = _region(label, points, width, height, kind)
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


def _via_points(shape: dict[str, Any], where: str) -> list[tuple[float, float]]:
    """The outline of a VIA region in pixels (a point or a line marks no area: none)."""
    name = shape.get("name")
    try:
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        if name in ("polygon", "polyline"):
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


def _min_tasks(path: Path, records: list[dict[str, Any]]) -> list[Task]:
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
        task.regions += [r for label in labels if (r := _region(label, points, 100, 100, shape)) is not None]


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


def file_names(path: Path, values: list[str]) -> list[str]:
    """The files the media field's values name, as paths under the export's folder (see the module's docstring)."""
    names = []
    for value in values:
        parsed = urlparse(value)
        local = parse_qs(parsed.query).get("d")
        if local and parsed.path.endswith("local-files/"):
            names.append(unquote(local[0]))
        elif parsed.scheme or value.startswith("/data/"):  # a URL, an upload: the file's name
            names.append(unquote(Path(parsed.path).name))
        else:  # a path as CVAT writes it ('images/cats/1.jpg'): relative to the export, else found by name
            names.append(value.replace("\\", "/"))
    uploads = [n for n in names if UPLOADED.fullmatch(n)]
    if uploads:  # kept as uploaded where such a file exists, else the user's own name
        present = _names_under(path.parent)
        names = [n if n in present or not UPLOADED.fullmatch(n) else UPLOADED.fullmatch(n).group("name")
                 for n in names]
    return names


def _names_under(folder: Path) -> set[str]:
    found: set[str] = set()
    for _, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update(files)
        if len(found) > INDEX_LIMIT:
            break
    return found


def as_table(path: Path, every: bool = False) -> Table:
    """A classification export as a table: the tasks' data fields (the media field's values as the files they name)
    and a ``label`` column of each task's choices (``a;b`` for several). Tasks without an annotation are left out and
    counted in the table's note (``every``: kept, with an empty label: what ``predict`` classifies); an annotated task
    without a choice keeps an empty label (skipped and named)."""
    tasks = read_tasks(path)
    if any(t.regions for t in tasks) and not every:
        raise DataError(f"{path}: its annotations mark regions (boxes, polygons): detection data (--task detection), "
                        "not classification")
    labelled = tasks if every else [t for t in tasks if t.annotated]
    if not every and not any(t.choices for t in labelled):
        _nothing_to_learn(path, labelled)
    if not labelled:
        raise DataError(f"{path}: none of its {len(tasks)} task(s) has an annotation: label some in "
                        f"{tool_of(path)} and export again")
    columns = [k for k in dict.fromkeys(k for t in labelled for k in t.data) if k != LABEL_COLUMN]
    media = media_column(labelled)
    names = file_names(path, [str(t.data.get(media) or "") for t in labelled]) if media else []
    rows = []
    for i, t in enumerate(labelled):
        row = {c: _cell(t.data.get(c)) for c in columns}
        if media:
            row[media] = names[i]
        row[LABEL_COLUMN] = ";".join(dict.fromkeys(t.choices))
        rows.append(row)
    left = len(tasks) - len(labelled)
    note = f"{tool_of(path)} tasks, numbered from 1" + (f"; {left} task(s) without an annotation (not labelled yet), "
                                                    "not read" if left else "")
    return Table(rows, [*columns, LABEL_COLUMN], header=True, source_note=note, numbered_from=1)


def _nothing_to_learn(path: Path, tasks: list[Task]) -> None:
    """A DataError for an export of results headstart does not train (spans of text, key points, brushes...)."""
    kinds = Counter(k for t in tasks for k in t.kinds)
    found = ", ".join(f"{k} x{n}" for k, n in kinds.most_common(5)) or "no result"
    raise DataError(f"{path}: its {len(tasks)} annotated task(s) hold no choice and no box (found: {found}). headstart "
                    "trains classification from 'choices' (Choices in the labelling config) and detection from "
                    "'rectanglelabels' or 'polygonlabels'")


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def task_of(path: Path) -> str:
    """The task an export is for: ``detection`` (regions), else ``image`` / ``multilabel`` (an image field; several
    choices in a task: multi-label), else ``text`` / ``text-multilabel``."""
    tasks = read_tasks(path)
    if any(t.regions for t in tasks):
        return "detection"
    labelled = [t for t in tasks if t.annotated]
    if labelled and not any(t.choices for t in labelled):
        _nothing_to_learn(path, labelled)
    several = any(len(set(t.choices)) > 1 for t in tasks)
    if media_column([t for t in tasks if t.annotated] or tasks):
        return "multilabel" if several else "image"
    return "text-multilabel" if several else "text"
