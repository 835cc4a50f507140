"""Exports of labelling tools, as people who label their own data save them. Imports no torch.

Label Studio's JSON export (its Export dialog's "JSON"): a list of tasks, each its ``data`` (the fields the labelling
config names: ``image``, ``text``...) and its ``annotations``, each a ``result`` list; or its "JSON-MIN": a record per
annotation, the task's data beside each control's result by the control's name (``"choice": "ants"``, ``"label":
[{"x": ..., "rectanglelabels": [...]}]``). CVAT's "CVAT for images 1.1" (``annotations.xml``): an ``<image>`` per
image with its ``<box>``, ``<polygon>`` and ``<tag>`` elements, in pixels. The VGG Image Annotator's (VIA) JSON
(``via_region_data.json`` of the Mask R-CNN balloon tutorial, a VIA 2 project's ``_via_img_metadata``): per image its
``filename`` and ``regions`` (``rect``, ``polygon``, ``circle``, ``ellipse`` in pixels; the label the region's first
attribute, ``object`` without one), its ``file_attributes`` a class. A Supervisely project (Dataset Ninja's
downloads): ``meta.json`` beside datasets of ``img/`` and ``ann/NAME.json`` (its rectangles, polygons, bitmaps and
tags). Apple's Create ML JSON (Roboflow's ``_annotations.createml.json``): per image its ``annotations`` of boxes.
Hugging Face's ``imagefolder`` metadata for detection (``metadata.jsonl``): per image its ``objects``' COCO boxes.

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
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from headstart.errors import DataError
from headstart.tasks.exports.createml import is_createml, read_createml
from headstart.tasks.exports.cvat import read_cvat
from headstart.tasks.exports.hf_imagefolder import is_hf_objects, read_hf_objects
from headstart.tasks.exports.label_studio import is_min
from headstart.tasks.exports.label_studio import read_tasks as read_label_studio
from headstart.tasks.exports.regions import Region, Task, media_column
from headstart.tasks.exports.supervisely import datasets, read_supervisely
from headstart.tasks.exports.via import read_via, via_images
from headstart.tasks.tables import SPLIT_FOLDERS, UPLOADED, Table, join_splits

__all__ = ["Labelled", "Region", "Task", "as_table", "export_in", "export_splits", "file_names", "is_export", "labelled_images",
           "media_column", "read_tasks", "task_of", "tool_of"]

LABEL_COLUMN = "label"  # the column of each task's choice(s) in ``as_table``
HEAD = 1 << 16  # characters looked at to tell an export from other JSON
EXPORTS_LOOKED_AT = 20  # .json / .xml files of a folder looked into for its one export, at most
EXPORT_SUFFIXES = (".json", ".xml", ".jsonl")  # the files an export is in
INDEX_LIMIT = 500_000  # files listed under the export's folder to find uploads by their own names


def is_export(path: Path) -> bool:
    """Whether ``path`` is a labelling tool's export: Label Studio's ``.json`` list of tasks with ``data`` and
    ``annotations`` (``completions`` before version 1.0) or JSON-MIN records, CVAT's ``.xml`` of ``<image>``s, or
    Hugging Face's ``metadata.jsonl`` of boxes."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return is_hf_objects(path)
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
        return '"filename"' in head and '"regions"' in head and via_images(_load(path)) is not None
    if '"coordinates"' in head and '"image"' in head and is_createml(_load(path)):
        return True
    full = '"data"' in head and ('"annotations"' in head or '"completions"' in head)
    if not head.lstrip().startswith("[") or not (full or ('"annotation_id"' in head and '"annotator"' in head)):
        return False
    tasks = _load(path)
    return (isinstance(tasks, list) and bool(tasks) and isinstance(tasks[0], dict)
            and (isinstance(tasks[0].get("data"), dict) or is_min(tasks)))


def tool_of(path: Path) -> str:
    """The tool an export comes from, as messages name it."""
    if path.is_dir():
        parts = {} if datasets(path) else export_splits(path)
        return tool_of(parts["train"]) if parts and parts["train"] != path else "Supervisely"
    if path.suffix.lower() == ".xml":
        return "CVAT"
    if path.suffix.lower() == ".jsonl":
        return "Hugging Face imagefolder"
    found = _load(path)
    return "VIA" if isinstance(found, dict) else "Create ML" if is_createml(found) else "Label Studio"


def export_in(folder: Path) -> Path | None:
    """The one export among the ``.json``, ``.xml`` and ``.jsonl`` files of ``folder`` (its images beside it: CVAT's
    ``annotations.xml`` beside ``images/``), else None."""
    if not folder.is_dir():
        return None
    candidates = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in EXPORT_SUFFIXES]
    if len(candidates) > EXPORTS_LOOKED_AT:  # a file per image (LabelMe's .json, labelImg's .xml): not one export
        return None
    found = [p for p in candidates if is_export(p)]
    return found[0] if len(found) == 1 else None


def export_splits(folder: Path, depth: int = 3) -> dict[str, Path]:
    """``{split: export}``: the folder's one export (``train``), or one in each of its ``train/``, ``val/`` (``valid/``)
    and ``test/`` folders (the balloon set's ``train/via_region_data.json`` and ``val/via_region_data.json``); also in
    the one folder ``folder`` holds (an unpacked archive's, ``depth`` levels down); {} without one for training."""
    if not folder.is_dir():
        return {}
    found_sets = datasets(folder)  # a Supervisely project: its datasets named for splits are those splits
    if found_sets:
        named = {SPLIT_FOLDERS[n.lower()]: d for n, d in found_sets.items() if n.lower() in SPLIT_FOLDERS}
        return named if "train" in named and len(named) == len(found_sets) else {"train": folder}
    alone = export_in(folder)
    if alone is not None:
        return {"train": alone}
    found = {SPLIT_FOLDERS[d.name.lower()]: e for d in sorted(folder.iterdir())
             if d.is_dir() and d.name.lower() in SPLIT_FOLDERS and (e := export_in(d)) is not None}
    if "train" in found:
        return found
    from headstart.tasks.segmentation import one_folder

    inside = one_folder(folder) if depth else None  # an unpacked archive's one folder (Dataset Ninja's project)
    return export_splits(inside, depth - 1) if inside is not None else {}


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
    if path.is_dir():
        return read_supervisely(path)
    if path.suffix.lower() == ".xml":
        return read_cvat(path)
    if path.suffix.lower() == ".jsonl":
        return read_hf_objects(path)
    found = _load(path)
    if isinstance(found, dict):
        return read_via(path, found)
    if is_createml(found):
        return read_createml(path, found)
    if not found:
        raise DataError(f"{path}: not a labelling tool's export (Label Studio's JSON list of tasks, VIA's JSON)")
    return read_label_studio(path, found)


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


@dataclass
class Labelled:
    """An export's labelled tasks with the image file each names (which may be missing), and what was left out: the
    tasks not labelled yet and the marks that are no area (``Task.unread``)."""

    items: list[tuple[Task, Path]]
    unlabelled: int
    unread: int


def labelled_images(path: Path) -> Labelled:
    """The labelled tasks of an export of images with their files (found as ``file_names`` says)."""
    from headstart.tasks.tables import table_files

    tasks = read_tasks(path)
    labelled = [t for t in tasks if t.annotated]
    media = media_column(labelled)
    if media is None:
        raise DataError(f"{path}: no field of its tasks' data names an image (as 'image': '/data/upload/1/x.jpg')")
    files, _ = table_files(path, file_names(path, [str(t.data.get(media) or "") for t in labelled]))
    return Labelled(list(zip(labelled, files)), len(tasks) - len(labelled), sum(t.unread for t in labelled))


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
    without a choice keeps an empty label (skipped and named). A folder of an export per split (``export_splits``:
    ``train/`` and ``val/`` folders, a Supervisely project's ``train`` and ``val`` datasets) is one table of them all
    with a ``split`` column, each image named by its whole path."""
    parts = export_splits(path) if path.is_dir() else {}
    if len(parts) > 1:
        return _split_tables(path, parts, every)
    if parts and parts["train"] != path:  # the folder's one export
        return as_table(parts["train"], every)
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


def _split_tables(path: Path, parts: dict[str, Path], every: bool) -> Table:
    """The tables of the exports of ``parts`` ({split: export}) as one (``tables.join_splits``)."""
    parts = {split: parts[split] for split in ("train", "val", "test") if split in parts}
    tables = {split: as_table(export, every) for split, export in parts.items()}
    where = ", ".join(f"{split}: {export.relative_to(path).as_posix()}" for split, export in parts.items())
    left = "; ".join(f"{split}: {t.source_note.partition('; ')[2]}" for split, t in tables.items()
                     if "; " in t.source_note)  # the tasks not labelled yet
    return join_splits({split: (t, media_column([Task(0, row, True) for row in t.rows[:200]]),
                                parts[split] if parts[split].is_dir() else parts[split].parent)
                        for split, t in tables.items()},
                       f"an export per split ({where}), their tasks numbered from 1 in that order"
                       + (f"; {left}" if left else ""))


def _nothing_to_learn(path: Path, tasks: list[Task]) -> None:
    """A DataError for an export of results headstart does not train (spans of text, key points, brushes...)."""
    kinds = Counter(k for t in tasks for k in t.kinds)
    found = ", ".join(f"{k} x{n}" for k, n in kinds.most_common(5)) or "no result"
    raise DataError(f"{path}: its {len(tasks)} annotated task(s) hold no choice and no box (found: {found}). headstart "
                    "trains classification from 'choices' (Choices in the labelling config), detection from "
                    "'rectanglelabels' or 'polygonlabels', segmentation from 'brushlabels'")


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def task_of(path: Path) -> str:
    """The task an export is for: ``segmentation`` (bitmaps only), ``detection`` (other regions), else ``image`` /
    ``multilabel`` (an image field; several choices in a task: multi-label), else ``text`` / ``text-multilabel``."""
    tasks = read_tasks(path)
    kinds = {r.kind for t in tasks for r in t.regions}
    if kinds:  # masks alone (Supervisely's bitmaps) are pixels to classify; boxes and polygons are objects to find
        return "segmentation" if kinds == {"bitmap"} else "detection"
    labelled = [t for t in tasks if t.annotated]
    if labelled and not any(t.choices for t in labelled):
        _nothing_to_learn(path, labelled)
    several = any(len(set(t.choices)) > 1 for t in tasks)
    if media_column([t for t in tasks if t.annotated] or tasks):
        return "multilabel" if several else "image"
    return "text-multilabel" if several else "text"
