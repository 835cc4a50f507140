"""Detection data: YOLO, COCO and Pascal VOC readers, box-aware transforms (letterbox, flip, scale, colour), dataset.

Layouts of DATA:
  * a YOLO folder (Ultralytics): ``data.yaml`` with ``names`` and ``train``/``val`` image folders, and
    ``labels/`` beside ``images/`` holding one ``class cx cy w h`` (normalised) line per box;
  * a COCO json file (images found beside it or in ``images/``; a seeded validation split is made),
    or a folder holding ``annotations/*train*.json`` and ``annotations/*val*.json`` (or ``train.json``/``val.json``);
  * a Pascal VOC folder (also inside ``VOCdevkit/VOC20xx/``): ``Annotations/*.xml`` (``<object>`` with ``<name>``
    and ``<bndbox>`` in pixels, ``<size>``), ``JPEGImages/``, and ``ImageSets/Main/{train,val,test}.txt`` when
    present (``test`` is kept aside, never trained on; without lists a seeded validation split is made). Classes
    are the object names found, sorted; ``<difficult>`` boxes are trained on, as torchvision's references do;
    ``annotations/*.xml`` beside ``images/`` (labelImg's output as datasets ship it) is the same layout;
  * a table of boxes (TensorFlow Object Detection CSV: ``filename,width,height,class,xmin,ymin,xmax,ymax`` in pixels,
    one row per box), or a folder of ``train/``, ``valid/`` (and ``test/``) each holding one as ``_annotations.csv``
    beside its images (Roboflow's export).
Boxes are kept as ``xyxy`` normalised to the image; boxes reaching outside the image are clipped and
zero-area boxes dropped, both counted in ``DetectionSplits.issues``.
"""

from __future__ import annotations

import json
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from headstart.errors import DataError
from headstart.tasks.detection import (
    BOX_COLUMNS,
    BOX_FORMS,
    box_form,
    box_table_splits,
    box_tables_in,
    coco_files,
    is_box_table,
    is_parquet_detection,
    names_file,
    split_exports,
    voc_folders,
)
from headstart.tasks.exports import export_splits, is_export
from headstart.tasks.flips import DEFAULT, Flips
from headstart.tasks.image.data import IMAGE_EXTENSIONS, Sample
from headstart.tasks.image.dataset import ImageStore, item_rng
from headstart.tasks.image.decode import image_beside, image_header, is_image_file
from headstart.tasks.labelme import labelme_splits

ISSUE_CLIPPED = "boxes clipped to the image"
ISSUE_DROPPED = "boxes dropped (zero area)"
ISSUE_BACKGROUND = "images without a box (background: no label file, or listed without one)"
ISSUE_UNNOTED = "images without an .xml beside them (not labelled yet, as labelImg leaves them): not used"
ISSUE_SUBSET = "boxes of classes left out by detection.classes"
ISSUE_ORPHAN = "label files without an image (ignored)"


@dataclass
class DetSample:
    """One image and its boxes (``xyxy`` normalised to [0, 1]) with class indices."""

    path: Path
    boxes: torch.Tensor
    labels: torch.Tensor
    key: str = ""  # sha1 of the file's bytes, filled when the file is read
    data: Any = None  # where the image is stored when not in a file of its own (a Parquet row): ``Sample.data``


@dataclass
class DetectionSplits:
    """Classes, the splits, and what was fixed or left out on the way (counted)."""

    classes: list[str]
    train: list[DetSample]
    val: list[DetSample]
    layout: str = ""
    issues: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    test: list[DetSample] = field(default_factory=list)  # a held-out test list of the data's own (VOC test.txt)
    val_held_out: bool = False  # validation was taken out of the training items (a seeded split), not given

    def select_classes(self, names: Sequence[str]) -> None:
        """Keep only the boxes of ``names`` (in that order); images left without boxes become background."""
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise DataError(f"Unknown class(es) {unknown} in detection.classes; this data has: {', '.join(self.classes)}")
        remap = torch.full((len(self.classes),), -1, dtype=torch.long)
        for new, name in enumerate(names):
            remap[self.classes.index(name)] = new
        for s in self.train + self.val + self.test:
            if len(s.labels):
                new = remap[s.labels]
                keep = new >= 0
                self.issues[ISSUE_SUBSET] += int((~keep).sum())
                s.boxes, s.labels = s.boxes[keep], new[keep]
        self.classes = list(names)


def fix_boxes(boxes: torch.Tensor, labels: torch.Tensor, issues: Counter) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip normalised xyxy boxes to the image and drop those with no area; counted in ``issues``."""
    if not len(boxes):
        return boxes.reshape(0, 4), labels.reshape(0)
    clipped = boxes.clamp(0.0, 1.0)
    issues[ISSUE_CLIPPED] += int(((clipped - boxes).abs() > 1e-3).any(dim=1).sum())  # rounding noise is not counted
    keep = (clipped[:, 2] - clipped[:, 0] > 1e-6) & (clipped[:, 3] - clipped[:, 1] > 1e-6)
    issues[ISSUE_DROPPED] += int((~keep).sum())
    return clipped[keep], labels[keep]


# ----------------------------------------------------------------------------------------------- YOLO
def _yolo_names(raw: Any, path: Path) -> list[str]:
    if isinstance(raw, dict):
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DataError(f"{path}: 'names' must map class ids (0, 1, ...) to names, found keys {list(raw)[:5]}") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: class ids in 'names' must be 0..{len(ids) - 1} without gaps, found {ids[:10]}")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in ids]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise DataError(f"{path}: expected 'names' as a list or a mapping of class id to name, found {raw!r}")


def _yolo_images(root: Path, entry: Any, yaml_path: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if not p.exists() and str(e).startswith("../") and (root / str(e)[3:]).exists():
            p = root / str(e)[3:]  # Roboflow's exports say '../train/images' beside data.yaml (as Ultralytics reads it)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and not q.name.startswith("."))
        elif p.is_file() and p.suffix == ".txt":
            files += [Path(line.strip()) if Path(line.strip()).is_absolute() else root / line.strip()
                      for line in p.read_text().splitlines() if line.strip()]
        else:
            raise DataError(f"{yaml_path}: image folder or list '{e}' not found (looked for {p})")
    return files


def label_path(image: Path) -> Path:
    """Ultralytics' convention: the last ``images`` folder of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def orphan_labels(images: Sequence[Path]) -> list[Path]:
    """Label files in the images' label folders that belong to no image (a misnamed or deleted image)."""
    expected = {label_path(image) for image in images}
    folders = {p.parent for p in expected if p.parent.is_dir()}
    return sorted(p for folder in folders for p in folder.glob("*.txt")
                  if p not in expected and p.name != "classes.txt")


def yolo_shapes(path: Path, num_classes: int, names_file: Path) -> list[tuple[int, list[tuple[float, float]], bool]]:
    """The shapes of one YOLO label file: ``(class id, outline, box)``, the outline normalised: a box's four corners
    (``box`` True), a segment's polygon (Ultralytics' ``-seg`` datasets: ``class x1 y1 x2 y2 ...``); DataError names
    file:line."""
    shapes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise DataError(f"{path}:{number}: expected 'class cx cy w h' numbers, found '{line.strip()}'") from None
        if len(values) == 5:
            cls, cx, cy, w, h = values
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            outline = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        elif len(values) >= 7 and len(values) % 2 == 1:  # segment polygon: class x1 y1 x2 y2 ...
            cls, outline = values[0], list(zip(values[1::2], values[2::2]))
        else:
            raise DataError(f"{path}:{number}: expected 5 values 'class cx cy w h' (normalised), found "
                            f"{len(values)}: '{line.strip()}'")
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise DataError(f"{path}:{number}: class id {parts[0]} has no name: {names_file} names "
                            f"{num_classes} classes (ids 0..{num_classes - 1}); fix the label or add the name")
        if len(values) == 5 and (w < 0 or h < 0):
            raise DataError(f"{path}:{number}: negative box width or height in '{line.strip()}'")
        shapes.append((int(cls), outline, len(values) == 5))
    return shapes


@dataclass
class YoloFiles:
    """A YOLO dataset's classes and, by split, each image with its label file (None: none, a background image), as
    ``data.yaml`` (``names_file``; or labelImg's class list) gives them; ``layout`` for the Data line."""

    classes: list[str]
    splits: dict[str, list[tuple[Path, Path | None]]]
    names_file: Path
    layout: str


def yolo_files(data: str | Path) -> YoloFiles:
    """A YOLO dataset from its folder (with ``data.yaml``; or, without one, a class list: labelImg's YOLO export, its
    images with a ``.txt`` each beside them or in ``labels/`` beside ``images/``) or the yaml file itself."""
    data = Path(data)
    yaml_path = data if data.is_file() else next((data / n for n in ("data.yaml", "dataset.yaml") if (data / n).exists()), None)
    if yaml_path is None and (names := names_file(data)) is not None:
        classes = [line.strip() for line in names.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        if not classes:
            raise DataError(f"{names} names no class: expected one class name per line (line 1 = class id 0)")
        images = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not images:
            raise DataError(f"No images in {data} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        pairs = [(i, next((p for p in (label_path(i), i.with_suffix(".txt")) if p.is_file()), None)) for i in images]
        return YoloFiles(classes, {"train": pairs}, names, f"YOLO boxes with {names.name} (no data.yaml)")
    if yaml_path is None:
        raise DataError(f"{data} has no data.yaml: a YOLO dataset needs one with 'names' and 'train'/'val' image "
                        "folders, or a classes.txt beside its images and their .txt boxes (a COCO json or a Pascal VOC "
                        "folder with Annotations/ and JPEGImages/ is read too)")
    try:
        cfg = yaml.safe_load(yaml_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{yaml_path} is not valid YAML: {exc}") from exc
    if "names" not in cfg or "train" not in cfg:
        raise DataError(f"{yaml_path}: expected keys 'names' and 'train' (and 'val'), found {sorted(cfg)}")
    classes = _yolo_names(cfg["names"], yaml_path)
    root = Path(str(cfg.get("path") or "."))
    root = root if root.is_absolute() else (yaml_path.parent / root).resolve()
    layout = f"YOLO {yaml_path.name}"
    lists = {"train": _yolo_images(root, cfg["train"], yaml_path)}
    if cfg.get("val"):
        lists["val"] = _yolo_images(root, cfg["val"], yaml_path)
    if cfg.get("test"):  # held out of training and of model selection: scored once, at the end
        try:  # exports name a test folder they do not always hold
            test = _yolo_images(root, cfg["test"], yaml_path)
        except DataError:
            test = None
        layout += (f", its 'test' entry {cfg['test']!r} not found" if test is None else
                   ", 'test' entry kept aside" if test else ", its 'test' entry holds no images")
        if test:
            lists["test"] = test
    for split, files in lists.items():
        if not files:
            raise DataError(f"{yaml_path}: no images in the '{split}' entry {cfg[split]!r}")
    return YoloFiles(classes, {split: [(i, label_path(i)) for i in files] for split, files in lists.items()},
                     yaml_path, layout)


def read_yolo(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """A YOLO dataset (``yolo_files``): each image's boxes (a segment's: the box around it); a seeded validation
    split when it gives none."""
    found = yolo_files(data)
    splits = DetectionSplits(found.classes, [], [], layout=found.layout)
    segments = shapes = 0
    for split, pairs in found.splits.items():
        for image, label in pairs:
            read = yolo_shapes(label, len(found.classes), found.names_file) if label and label.exists() else None
            segments += sum(not box for *_, box in read or [])
            shapes += len(read or [])
            getattr(splits, split).append(_yolo_sample(image, read, splits.issues))
    if found.names_file.suffix.lower() in (".yaml", ".yml"):
        splits.issues[ISSUE_ORPHAN] += len(orphan_labels([i for pairs in found.splits.values() for i, _ in pairs]))
    if 2 * segments > shapes:
        splits.layout += "; its labels are polygons (segments): their boxes are read, --task segmentation reads their pixels"
    if "val" not in found.splits:
        random_split(splits, val_fraction, seed)
    return splits


def _yolo_sample(image: Path, shapes: list[tuple[int, list[tuple[float, float]], bool]] | None,
                 issues: Counter) -> DetSample:
    """One image and the boxes of its label file's ``yolo_shapes`` (a segment's: the box around it; None: no label
    file, a background image, counted in ``issues``)."""
    if shapes is None:
        issues[ISSUE_BACKGROUND] += 1
    boxes = torch.tensor([[min(x for x, _ in o), min(y for _, y in o), max(x for x, _ in o), max(y for _, y in o)]
                          for _, o, _ in shapes or []], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([cls for cls, _, _ in shapes or []], dtype=torch.long)
    boxes, labels = fix_boxes(boxes, labels, issues)
    return DetSample(image, boxes, labels)


def random_split(splits: DetectionSplits, val_fraction: float, seed: int) -> None:
    """Hold a seeded ``val_fraction`` of the training items out as the validation split."""
    items = splits.train
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * val_fraction))
    val = set(order[:n_val])
    splits.train, splits.val = [s for i, s in enumerate(items) if i not in val], [s for i, s in enumerate(items) if i in val]
    splits.layout += f", {val_fraction:.0%} random validation split (seed {seed})"
    splits.val_held_out = True


# ----------------------------------------------------------------------------------------------- Pascal VOC
def voc_root(data: Path) -> Path | None:
    """The folder holding ``Annotations/`` (and ``JPEGImages/``): DATA, or ``VOC20xx/`` / ``VOCdevkit/VOC20xx/`` in it."""
    if not data.is_dir():
        return None
    candidates = [data, *sorted(data.glob("VOC*")), *sorted(data.glob("VOCdevkit/VOC*"))]
    found = [c for c in candidates if voc_folders(c) is not None]
    if len(found) > 1 and found[0] != data:
        raise DataError(f"{data} holds several Pascal VOC folders ({', '.join(str(f) for f in found)}): "
                        "give one of them as DATA")
    return found[0] if found else None


def _voc_number(node: ET.Element | None, tag: str, xml: Path) -> float:
    text = node.findtext(tag) if node is not None else None
    try:
        return float(str(text).strip())
    except ValueError:
        raise DataError(f"{xml}: expected a number in <{tag}>, found {text!r}") from None


def read_voc_annotation(xml: Path, images: Path) -> tuple[Path, list[str], torch.Tensor]:
    """The image of one VOC annotation, its objects' class names and their boxes (``xyxy`` normalised)."""
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{xml}: not a readable Pascal VOC annotation ({exc})") from None
    filename = str(root.findtext("filename") or "").strip()
    image = images / (filename or f"{xml.stem}.jpg")
    if not image.is_file():  # the <filename> of some VOC exports is stale, or lacks its suffix
        image = image_beside(images, xml.stem) or image
    if not image.is_file():
        raise DataError(f"{xml}: its image {image} does not exist")
    size = root.find("size")
    width, height = (_voc_number(size, "width", xml), _voc_number(size, "height", xml)) if size is not None else (0, 0)
    if width <= 0 or height <= 0:  # no <size>, or 0 x 0 as some tools write: the image's own header says
        try:
            _, width, height = image_header(image)
        except (OSError, ValueError) as exc:
            raise DataError(f"{xml}: no <size> and its image {image} cannot be read ({exc})") from None
    names, boxes = [], []
    for number, obj in enumerate(root.iter("object"), 1):
        name = str(obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{xml}: object {number} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{xml}: object {number} ('{name}') has no <bndbox>")
        x1, y1, x2, y2 = (_voc_number(box, t, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        names.append(name)
        boxes.append([x1 / width, y1 / height, x2 / width, y2 / height])
    return image, names, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def read_voc(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """A Pascal VOC folder; splits from ``ImageSets/Main/{train,val,test}.txt`` when present."""
    root = voc_root(Path(data))
    if root is None:
        raise DataError(f"{data}: expected a Pascal VOC folder with Annotations/ and JPEGImages/")
    notes, images = voc_folders(root) or (root / "Annotations", root / "JPEGImages")
    xmls = sorted(notes.glob("*.xml"))
    if not xmls:
        raise DataError(f"{notes}: no .xml annotations (a Pascal VOC folder has Annotations/*.xml and JPEGImages/)")
    read = {xml.stem: read_voc_annotation(xml, images) for xml in xmls}
    classes = sorted({n for _, names, _ in read.values() for n in names})
    if not classes:
        raise DataError(f"{notes}: no <object> in any of its {len(xmls)} annotations")
    where = "" if (notes.name, images.name) == ("Annotations", "JPEGImages") else f" ({notes.name}/, {images.name}/)"
    splits = DetectionSplits(classes, [], [], layout=f"Pascal VOC {root.name}{where}")

    def sample(stem: str) -> DetSample:
        image, names, boxes = read[stem]
        if not names:
            splits.issues[ISSUE_BACKGROUND] += 1
        labels = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
        return DetSample(image, *fix_boxes(boxes, labels, splits.issues))

    lists = root / "ImageSets" / "Main"
    if (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
        for name in ("train", "val", "test"):
            path = lists / f"{name}.txt"
            stems = path.read_text().split() if path.is_file() else []
            unknown = [s for s in stems if s not in read]
            if unknown:
                raise DataError(f"{path}: {len(unknown)} id(s) without an annotation in {notes}, e.g. {unknown[:3]}")
            getattr(splits, name).extend(sample(s) for s in stems)
        splits.layout += ", ImageSets/Main splits" + (" (test kept aside)" if splits.test else "")
        return splits
    splits.train = [sample(stem) for stem in read]
    random_split(splits, val_fraction, seed)
    return splits


# ------------------------------------------------------------------------------------------ box tables
ONE_CLASS = "object"  # the class of a table of boxes without a class column


def read_box_table(path: Path, issues: Counter) -> tuple[list[str], list[DetSample], str]:
    """The class names (sorted), the samples of a table of boxes (one row per box, in pixels, as ``BOX_FORMS`` write
    them; a row whose box cells or class are blank lists an image without boxes) and how it was read. The images are
    named relative to the table or found beside it (``tables.table_files``); without width / height columns beside
    the corners, the images' headers give the sizes. Without a class column, every box is of one class."""
    from headstart.tasks.tables import read_delimited, table_files

    table = read_delimited(path, ["filename", "class", *BOX_COLUMNS])
    lower = {c.strip().lower(): c for c in table.columns}
    form = box_form(table.columns)
    image_col = next((lower[c] for c in ("filename", "file", "image", "path", "image_id", "file_name", "imageid",
                                         "patientid") if c in lower), None)
    class_col = next((lower[c] for c in ("class", "label", "category", "name", "class_name") if c in lower), None)
    if image_col is None or form is None:
        raise DataError(f"{path}: a table of boxes needs an image column (filename) and box columns "
                        f"({' or '.join(', '.join(f) for f in BOX_FORMS)}); columns found: {table.columns}")
    files, found_as = table_files(path, [r[image_col] for r in table.rows])
    by_image: dict[Path, list[tuple[str, list[float], int]]] = {}
    sizes: dict[Path, tuple[float, float]] = {}
    for line, (row, file) in enumerate(zip(table.rows, files), start=table.first_line):
        name = str(row[class_col] or "").strip() if class_col else ONE_CLASS
        cells = [str(row[lower[c]] or "").strip() for c in form]
        boxes = by_image.setdefault(file, [])
        if not name or not any(cells):  # an image listed without a box: background
            continue
        try:
            corners = _corners(form, cells)
            if form == BOX_COLUMNS and "width" in lower and "height" in lower and str(row[lower["width"]]).strip():
                sizes[file] = (float(row[lower["width"]]), float(row[lower["height"]]))
        except (TypeError, ValueError):
            raise DataError(f"{path}:{line}: expected numbers in {', '.join(form)}"
                            f"{' (and width, height)' if form == BOX_COLUMNS else ''}, found {cells}") from None
        boxes.append((name, corners, line))
    missing = [f for f in by_image if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image(s) it names do not exist, e.g. {[str(m) for m in missing[:3]]}")
    classes = sorted({name for rows in by_image.values() for name, _, _ in rows})
    samples = []
    for file, rows in by_image.items():
        width, height = sizes.get(file) or image_header(file)[1:]
        if width <= 0 or height <= 0:
            raise DataError(f"{path}: {file.name} has width x height {width} x {height}")
        xyxy = torch.tensor([[c[0] / width, c[1] / height, c[2] / width, c[3] / height] for _, c, _ in rows],
                            dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([classes.index(n) for n, _, _ in rows], dtype=torch.long)
        if not rows:
            issues[ISSUE_BACKGROUND] += 1
        samples.append(DetSample(file, *fix_boxes(xyxy, labels, issues)))
    how = [f"boxes as {', '.join(form)}" if form != BOX_COLUMNS else "",
           "" if class_col else f"no class column: one class '{ONE_CLASS}'", found_as]
    return classes, samples, "; ".join(h for h in how if h)


def _corners(form: tuple[str, ...], cells: list[str]) -> list[float]:
    """``[x1, y1, x2, y2]`` in pixels of one row's box cells written as ``form``."""
    if form == ("bbox",):  # "[x, y, width, height]"
        values = [float(v) for v in re.split(r"[\s,;]+", cells[0].strip("[]() ")) if v]
        if len(values) != 4:
            raise ValueError(cells[0])
    else:
        values = [float(c) for c in cells]
    if form == BOX_COLUMNS:
        return values
    x, y, w, h = values
    return [x, y, x + w, y + h]


def read_box_tables(data: Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """A table of boxes (a seeded validation split), or a folder of split folders each with its ``_annotations.csv``."""
    tables = {"train": data} if data.is_file() else box_table_splits(data) or box_tables_in(data)
    if "train" not in tables:
        raise DataError(f"{data}: expected a table of boxes or train/ (and valid/) folders holding _annotations.csv")
    beside = data.is_dir() and all(p.parent == data for p in tables.values())  # tables in DATA, not in split folders
    issues: Counter = Counter()
    read = {split: read_box_table(path, issues) for split, path in tables.items()}
    classes = sorted({c for names, _, _ in read.values() for c in names})
    how = next(iter(read.values()))[2]
    named = ", ".join(p.name if beside else f"{p.parent.name}/{p.name}" for p in tables.values())
    splits = DetectionSplits(classes, [], [], layout=(f"table of boxes {data.name}" if data.is_file() else
                             f"table{'s' * (len(tables) > 1)} of boxes ({named})")
                             + (f" ({how})" if how else ""), issues=issues)
    for split, (names, samples, _) in read.items():
        for s in samples:  # each table's class indices -> the classes of all tables
            s.labels = torch.tensor([classes.index(names[i]) for i in s.labels.tolist()], dtype=torch.long)
        getattr(splits, split).extend(samples)
    if not splits.val:
        random_split(splits, val_fraction, seed)
    return splits


# ----------------------------------------------------------------------------------------------- COCO
def read_coco_json(path: Path, issues: Counter, image_dirs: Sequence[Path] = ()) -> tuple[list[str], list[DetSample]]:
    """Classes (ordered by category id) and samples of one COCO instances json."""
    try:
        coco = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable COCO json: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"{path}: expected a COCO instances file with a '{key}' list; found keys {sorted(coco)[:8]}")
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    classes = [str(c["name"]) for c in cats]
    index = {c["id"]: i for i, c in enumerate(cats)}
    images = {im["id"]: im for im in coco["images"]}
    per_image: dict[Any, list] = {i: [] for i in images}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        where = f"{path}: annotation id {ann.get('id')}"
        if ann.get("category_id") not in index:
            raise DataError(f"{where}: category_id {ann.get('category_id')} has no entry in 'categories' "
                            f"(known ids {sorted(index)[:10]}...)")
        if ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')} has no entry in 'images'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DataError(f"{where}: expected bbox [x, y, width, height] in pixels, found {bbox!r}")
        per_image[ann["image_id"]].append((bbox, index[ann["category_id"]]))
    dirs = [*image_dirs, path.parent, path.parent / "images", path.parent.parent / "images"]
    samples = []
    for image_id, im in images.items():
        name = Path(im["file_name"])
        file = name if name.is_absolute() else next((d / name for d in dirs if (d / name).exists()), dirs[0] / name)
        w, h = float(im.get("width") or 0), float(im.get("height") or 0)
        if w <= 0 or h <= 0:
            raise DataError(f"{path}: image id {image_id} ({name}) has no width/height; COCO images need both")
        anns = per_image[image_id]
        boxes = torch.tensor([[x / w, y / h, (x + bw) / w, (y + bh) / h] for (x, y, bw, bh), _ in anns],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([c for _, c in anns], dtype=torch.long)
        boxes, labels = fix_boxes(boxes, labels, issues)
        samples.append(DetSample(file, boxes, labels))
    return classes, samples


def read_coco(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """A COCO dataset: one json (split made here) or a folder with train and val jsons."""
    data = Path(data)
    if data.is_file():
        issues: Counter = Counter()
        classes, samples = read_coco_json(data, issues)
        splits = DetectionSplits(classes, samples, [], layout=f"COCO {data.name}", issues=issues)
        random_split(splits, val_fraction, seed)
        return splits
    jsons = coco_files(data)
    train = [p for p in jsons if "train" in p.stem]
    val = [p for p in jsons if "val" in p.stem]
    if len(jsons) == 1 or (len(train) == 1 and not val):  # CVAT's annotations/instances_default.json: split here
        one = train[0] if train else jsons[0]
        splits = read_coco(one, val_fraction, seed)
        splits.layout = splits.layout.replace(f"COCO {one.name}", f"COCO {one.relative_to(data).as_posix()}", 1)
        return splits
    if not train or not val:
        raise DataError(f"{data}: expected one COCO instances json, or two with 'train' and 'val' in their names (e.g. "
                        f"annotations/instances_train.json), found {[p.name for p in jsons] or 'none'}")
    issues = Counter()
    splits_of = {}
    for split, p in (("train", train[0]), ("val", val[0])):
        sub = p.stem.split("_")[-1]  # instances_val2017 -> val2017
        dirs = [data / "images" / sub, data / sub, data / "images" / split, data / split]
        splits_of[split] = read_coco_json(p, issues, dirs)
    if splits_of["train"][0] != splits_of["val"][0]:
        raise DataError(f"{data}: the train and val jsons list different categories")
    return DetectionSplits(splits_of["train"][0], splits_of["train"][1], splits_of["val"][1],
                           layout=f"COCO {train[0].name} + {val[0].name}", issues=issues)


def read_split_exports(data: Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """An export in split folders (``split_exports``): each folder's COCO json or VOC .xml files beside its images.
    A COCO category that is only the others' supercategory and has no box (Roboflow's first one, named after the
    dataset) is not a class."""
    found = split_exports(data)
    if found is None:
        raise DataError(f"{data}: expected train/ (and valid/, test/) folders holding a COCO json or VOC .xml files")
    kind, folders = found
    issues: Counter = Counter()
    read: dict[str, tuple[list[str], list[DetSample]]] = {}
    for split, folder in folders.items():
        if kind == "coco":
            read[split] = read_coco_json(next(folder.glob("*.json")), issues, [folder])
        else:
            notes = [read_voc_annotation(xml, folder) for xml in sorted(folder.glob("*.xml"))]
            noted = {image.stem for image, _, _ in notes}
            issues[ISSUE_UNNOTED] += sum(is_image_file(p) and p.stem not in noted for p in folder.iterdir())
            names = sorted({n for _, found_names, _ in notes for n in found_names})
            read[split] = names, [DetSample(image, boxes, torch.tensor([names.index(n) for n in found_names],
                                                                      dtype=torch.long))
                                  for image, found_names, boxes in notes]
    classes = sorted({c for names, _ in read.values() for c in names}) if kind == "voc" else read["train"][0]
    if kind == "coco" and any(names != classes for names, _ in read.values()):
        raise DataError(f"{data}: the COCO jsons of {', '.join(f'{d.name}/' for d in folders.values())} list different "
                        "categories")
    where = ("beside the images" if list(folders.values()) == [data] else
             "in " + ", ".join(f"{d.relative_to(data).as_posix()}/" for d in folders.values()))
    splits = DetectionSplits(classes, [], [], issues=issues, layout=f"{'COCO' if kind == 'coco' else 'Pascal VOC'} "
                             f"files {where}")
    for split, (names, samples) in read.items():
        for s in samples:  # each split's class indices -> those of all splits (VOC boxes checked as COCO's were)
            s.labels = torch.tensor([classes.index(names[i]) for i in s.labels.tolist()], dtype=torch.long)
            if kind == "voc":
                issues[ISSUE_BACKGROUND] += not len(s.labels)
                s.boxes, s.labels = fix_boxes(s.boxes, s.labels, issues)
            getattr(splits, split).append(s)
    if kind == "coco":
        counts = Counter(int(t) for s in splits.train + splits.val + splits.test for t in s.labels)
        categories = json.loads(next(folders["train"].glob("*.json")).read_text()).get("categories", [])
        parents = {str(c.get("supercategory", "")) for c in categories}
        unused = [c for i, c in enumerate(classes) if not counts[i] and c in parents]
        if unused:
            splits.select_classes([c for c in classes if c not in unused])
            splits.layout += f" ('{unused[0]}', the other categories' supercategory without a box, is not a class)"
    if not splits.val:
        random_split(splits, val_fraction, seed)
    return splits


def discover(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """YOLO, COCO or Pascal VOC, told apart by what DATA holds."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"Data not found: {data}")
    if is_export(data) or export_splits(data):  # Label Studio's JSON, CVAT's XML, VIA's JSON: boxes
        from headstart.tasks.detection.exports import read_export

        return read_export(data, val_fraction, seed)
    if split_exports(data) is not None:
        return read_split_exports(data, val_fraction, seed)
    if labelme_splits(data):  # a .json beside each image, as LabelMe saves them
        from headstart.tasks.detection.labelme import read_labelme

        return read_labelme(data, val_fraction, seed)
    if data.is_dir() and not any((data / n).exists() for n in ("data.yaml", "dataset.yaml")) and voc_root(data):
        return read_voc(data, val_fraction, seed)
    if is_box_table(data) or box_table_splits(data) or box_tables_in(data):
        return read_box_tables(data, val_fraction, seed)
    if data.suffix == ".json" or (data.is_dir() and not any((data / n).exists() for n in ("data.yaml", "dataset.yaml"))
                                  and coco_files(data)):
        return read_coco(data, val_fraction, seed)
    if is_parquet_detection(data):  # a Hugging Face dataset repository of images and boxes (cppe-5)
        from headstart.tasks.detection.hf_parquet import read_parquet_detection

        return read_parquet_detection(data, val_fraction, seed)
    if data.suffix in {".yaml", ".yml"} or data.is_dir():
        return read_yolo(data, val_fraction, seed)
    raise DataError(f"{data}: expected a YOLO folder (data.yaml, images/, labels/; or images with their .txt boxes and "
                    "classes.txt), its data.yaml, a COCO json, a Pascal VOC folder (Annotations/, JPEGImages/) or "
                    "LabelMe's .json beside each image, or a labelling tool's export (Label Studio's JSON, CVAT's XML)")


# ------------------------------------------------------------------------------------------ transforms
class Letterbox(v2.Transform):
    """Resize the longer side to ``size`` and pad right/bottom to a square; boxes follow the pixels."""

    def __init__(self, size: int, fill: int = 114) -> None:
        super().__init__()
        self.size, self.fill = size, fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(x for x in flat_inputs if isinstance(x, (tv_tensors.Image, Image.Image)))
        h, w = F.get_size(image)
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        return {"resize": [nh, nw], "pad": [0, 0, self.size - nw, self.size - nh]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image) and inpt.dtype == torch.uint8 and inpt.device.type == "cpu":
            # an 8-bit image on the CPU is resized by PIL, as the ONNX engine's letterbox_array resizes it: torchvision's
            # uint8 kernel rounds about 1 value in 1000 the other way, enough to flip which of two crowded boxes
            # (red blood cells) non-maximum suppression keeps
            out = tv_tensors.wrap(F.pil_to_tensor(F.resize(F.to_pil_image(inpt), params["resize"])), like=inpt)
        else:
            out = F.resize(inpt, params["resize"], antialias=True)
        return F.pad(out, params["pad"], fill=self.fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}"


def letterbox_scale(width: int, height: int, size: int) -> float:
    """Factor from image pixels to letterbox pixels (the image is placed at the top-left)."""
    return size / max(width, height)


def train_transform(size: int, augment: str = "standard", flips: Flips = DEFAULT) -> v2.Compose:
    """Letterbox, then ``flips`` and scale/translate jitter (``light``), plus colour (``standard``)."""
    steps: list[Any] = [Letterbox(size)]
    if augment in ("light", "standard"):
        steps += [*flips.steps(),
                  v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(0.7, 1.3), fill=114)]
    if augment == "standard":
        steps.append(v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=2.0),
              v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def eval_transform(size: int) -> v2.Compose:
    return v2.Compose([Letterbox(size), v2.ToDtype(torch.float32, scale=True)])


def to_tv(image: Image.Image, boxes: torch.Tensor, labels: torch.Tensor) -> tuple[tv_tensors.Image, dict]:
    """PIL image + normalised boxes -> a tv_tensors Image and a target with pixel ``BoundingBoxes``."""
    w, h = image.size
    pixel = boxes * torch.tensor([w, h, w, h], dtype=torch.float32)
    target = {"boxes": tv_tensors.BoundingBoxes(pixel, format="XYXY", canvas_size=(h, w)), "labels": labels.clone()}
    return tv_tensors.Image(F.pil_to_tensor(image)), target


class DetectionDataset(Dataset):
    """``(image [3,S,S] in [0,1], {"boxes", "labels" (1..C; 0 is background)})``; seeded per (epoch, file)."""

    def __init__(self, samples: list[DetSample], store: ImageStore, transform: v2.Compose, seed: int = 0,
                 epoch: int = 0) -> None:
        self.samples, self.store, self.transform = samples, store, transform
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.samples[index]
        image, target = to_tv(self.store.get(s.path), s.boxes, s.labels)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small per-image ops: extra threads only wait on each other (10x slower on busy CPUs)
        try:
            with item_rng(self.seed, self.epoch, s.key or str(s.path)):
                image, target = self.transform(image, target)
        finally:
            torch.set_num_threads(threads)
        return image.as_subclass(torch.Tensor), {"boxes": target["boxes"].as_subclass(torch.Tensor).float(),
                                                 "labels": target["labels"] + 1}


def collate(batch: list) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


class DetectionData:
    """Detection splits read through one ImageStore; what the detection loop needs."""

    def __init__(self, splits: DetectionSplits, image_size: int, interpolation: str = "bilinear",
                 preload_mb: int = 2048, strict: bool = False, augment: str = "standard", seed: int = 0,
                 flips: Flips = DEFAULT, training: bool = False) -> None:
        """``training``: the splits are a training run's, so near-copies across them are looked for (``notes``)."""
        self.classes, self.image_size, self.seed = splits.classes, image_size, seed
        self.notes: list[str] = []  # what reading found, to warn of
        samples = splits.train + splits.val
        proxies = [Sample(s.path, data=s.data) for s in samples]
        self.store = ImageStore(proxies, image_size, interpolation, preload_mb, strict)
        splits.skipped += self.store.skipped
        ok = {id(p) for p in self.store.samples}
        for s, p in zip(samples, proxies):
            s.key = p.key
        self.splits = {
            "train": [s for s, p in zip(samples[: len(splits.train)], proxies) if id(p) in ok],
            "val": [s for s, p in zip(samples[len(splits.train):], proxies[len(splits.train):]) if id(p) in ok],
        }
        for name in ("train", "val"):
            if not self.splits[name]:
                raise DataError(f"No readable images left in the {name} split ({len(splits.skipped)} skipped)")
        in_train = {s.path for s in self.splits["train"]}
        if training and not any(s.path in in_train for s in self.splits["val"]):  # (a refit trains on validation)
            # a picture saved twice, one copy on each side (the samples carry their proxies' keys)
            halves = {name: list(self.splits[name]) for name in ("train", "val")} | {"test": []}
            self.notes = self.store.near_copies(halves, splits.val_held_out, self.classes, conflicts=False, exact=True)
            moved = [s for s in halves["train"] if s.path not in in_train]  # validation's, given to training
            if moved:
                gone = {s.path for s in moved}
                self.splits["val"] = [s for s in self.splits["val"] if s.path not in gone]
                self.splits["train"] += moved
                splits.val = [s for s in splits.val if s.path not in gone]
                splits.train += moved
        self.train_tf = train_transform(image_size, augment, flips)
        self.eval_tf = eval_transform(image_size)

    def release(self) -> None:
        """Let the decoded images go (read again from their files if still needed)."""
        self.store.release()

    def keys(self, split: str) -> list[str]:
        return [s.key for s in self.splits[split]]

    def dataset(self, split: str, train: bool, epoch: int) -> DetectionDataset:
        return DetectionDataset(self.splits[split], self.store, self.train_tf if train else self.eval_tf, self.seed, epoch)

    def extents(self, split: str) -> list[tuple[int, int]]:
        """Where each image of ``split`` lies in its un-augmented letterbox: ``(width, height)`` in the letterbox's
        pixels from its top-left corner (the rest is padding)."""
        out = []
        for s in self.splits[split]:
            w, h = self.store.get(s.path).size
            scale = letterbox_scale(w, h, self.image_size)
            out.append((max(1, round(w * scale)), max(1, round(h * scale))))
        return out

    def transform_id(self, train: bool) -> str:
        return repr(self.train_tf if train else self.eval_tf).replace("\n", " ")

    def box_counts(self, split: str) -> list[int]:
        counts = [0] * len(self.classes)
        for s in self.splits[split]:
            for c in s.labels.tolist():
                counts[c] += 1
        return counts
