"""Evidence on the user's own data: strategies against training from scratch, over seeded splits, for any task.

``compare(DATA, out=DIR, task=...)`` trains every (backbone, strategy) cell on the same seeded splits,
including ``scratch`` (the same network from random initial weights, strategy ``full``, a budget never
smaller than the pretrained cells'), and reports the mean and a t-interval over seeds of the task's
scores (classifiers: accuracy and macro-F1; detection: mAP@0.5, the headline, and mAP@0.5:0.95;
segmentation: mean IoU and pixel accuracy; multi-label: mAP, macro-F1 and the label-frequency baseline's
mAP on the same validation split), wall seconds and items per second. ``shots`` adds a learning curve
(examples per class; detection and multi-label: images per class).

The task comes from the registry (``headstart.tasks``): its estimator trains each cell and its reader
reads the split files written here under ``DIR/splits``, which all point at the user's own data:

* image: a CSV (path, label, split) per seed and shot count, stratified by class;
* text: a CSV (text, label, split) per seed and shot count, stratified by class;
* detection: a folder per seed and shot count holding a COCO ``train.json`` and ``val.json`` whose
  images are the original files (absolute paths); a seeded random split of the images;
* segmentation: a folder per seed and shot count of links to the original image and mask files;
* multilabel: a CSV (path, labels separated by ';', split) per seed and shot count, stratified by each
  image's rarest label.

Every cell therefore reads the same content, and the feature cache (keyed by content) is shared by the
strategies of a seed and, since the augmentation seed is fixed (``data.augment_seed``), by the seeds too.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.core import strategies
from headstart.core.report import html_report, outputs
from headstart.core.splits import merged_units, stratified_split
from headstart.errors import ConfigError, DataError
from headstart.progress import console, say, warnings_once
from headstart.tasks import get_task
from headstart.tasks.base import Task

SCRATCH = "scratch"
DEFAULT_STRATEGIES = ("linear", "lp-ft", SCRATCH)
# Two-sided 95 % Student t quantiles t(0.975, df) for df = 1..30 (used when scipy is absent).
T95 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
       2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
       2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423]


@dataclass(frozen=True)
class Score:
    """A validation score compare reports: its key (cells, summary, compare.json), label and estimator key."""

    key: str  # "accuracy", "macro_f1", "map_50", "map"
    label: str  # what tables and plots call it
    source: str  # the key in the estimator's ``metrics_`` (and ``key`` in its ``metrics_["test"]``)


CLASSIFICATION_SCORES = (Score("accuracy", "accuracy", "val_accuracy"), Score("macro_f1", "macro-F1", "val_macro_f1"))
DETECTION_SCORES = (Score("map_50", "mAP@0.5", "val_map_50"), Score("map", "mAP@0.5:0.95", "val_map"))
SEGMENTATION_SCORES = (Score("miou", "mean IoU", "val_miou"), Score("pixel_accuracy", "pixel accuracy",
                                                                    "val_pixel_accuracy"))
# multi-label: the label-frequency baseline (each label's training frequency as every image's score) on the cell's
# own validation split sits beside the model's mAP, as in every multi-label report
MULTILABEL_SCORES = (Score("map", "mAP", "val_map"), Score("macro_f1", "macro-F1", "val_macro_f1"),
                     Score("baseline_map", "frequency-baseline mAP", "val_baseline_map"))
SCORES: dict[str, tuple[Score, ...]] = {"image": CLASSIFICATION_SCORES, "text": CLASSIFICATION_SCORES,
                                        "detection": DETECTION_SCORES, "segmentation": SEGMENTATION_SCORES,
                                        "multilabel": MULTILABEL_SCORES, "text-multilabel": MULTILABEL_SCORES}


def task_scores(task: Task) -> tuple[Score, ...]:
    """The scores of a task, its headline (``Task.metric``) first."""
    if task.name not in SCORES:
        raise ConfigError(f"compare does not know the scores of task '{task.name}' (it knows {', '.join(SCORES)})")
    scores = SCORES[task.name]
    if task.metric not in {s.key for s in scores}:
        raise ConfigError(f"Task '{task.name}' ranks by '{task.metric}', which compare does not report "
                          f"({', '.join(s.key for s in scores)})")
    return tuple(sorted(scores, key=lambda s: s.key != task.metric))


# ------------------------------------------------------------------------------------------ statistics
def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student t quantile ``t((1 + confidence) / 2, df)``, from ``scipy.stats.t``."""
    from scipy.stats import t

    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1, found {confidence}")
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, found {df}")
    return float(t.ppf((1 + confidence) / 2, df))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the t-interval ``mean ± t * s / sqrt(n)``.

    With one value the interval is unknown: ``half_width``, ``low`` and ``high`` are None.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "std": None, "half_width": None, "low": None, "high": None, "n": 1}
    std = statistics.stdev(values)
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "half_width": half, "low": mean - half, "high": mean + half, "n": n}


# ------------------------------------------------------------------------------------------- the pools
class ClassificationPool:
    """Every labelled item of an image or text dataset (train and val pooled; test kept aside).

    Splits are stratified by class; each (seed, shots) split is a CSV (item, label, split).
    """

    split_kind = "stratified"

    def __init__(self, task: Task, data: str | Path, val_fraction: float, options: dict[str, Any]) -> None:
        if task.name == "image":
            from headstart.tasks.image.data import discover

            splits = discover(data, val_fraction, 0, options.get("data.path_column"), options.get("data.label_column"),
                              options.get("data.group_column"))
            self.item, self.noun = "path", "images"
            self.columns = {"data.path_column": "path", "data.label_column": "label"}

            def value(s: Any) -> str:
                return str(Path(s.path).resolve())
        else:
            from headstart.tasks.text.data import discover

            splits = discover(data, options.get("text.text_column"), options.get("text.label_column"), val_fraction, 0)
            self.item, self.noun = "text", "texts"
            self.columns = {"text.text_column": "text", "text.label_column": "label"}

            def value(s: Any) -> str:
                return s.text
        pool = splits.train + splits.val
        self.classes, self.layout = splits.classes, splits.layout
        # images held in memory (a table of pixels' rows): written as files beside the splits when they are
        self.memory = {value(s): s.data for s in [*pool, *splits.test] if getattr(s, "data", None) is not None}
        self.items = [value(s) for s in pool]
        self.labels = [s.label for s in pool]
        self.groups = [getattr(s, "group", "") for s in pool]  # a table's patients, the patients paths name
        self.test = [(value(s), s.label) for s in splits.test]

    def check(self) -> None:
        counts = [self.labels.count(c) for c in range(len(self.classes))]
        if min(counts) < 2:
            raise DataError(f"compare needs at least 2 items per class for seeded splits; found "
                            f"{dict(zip(self.classes, counts))}")

    def split(self, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
        """A seeded stratified split; each group (patient) on one side of it, as in training."""
        return stratified_split(self.labels, val_fraction, seed, groups=self.groups)

    def shot_subset(self, train: list[int], shots: int | str, seed: int) -> list[int]:
        return _shot_subset(train, self.labels, shots, seed)

    def per_class(self, train: list[int]) -> float:
        """Training examples per class."""
        return len(train) / len(self.classes)

    def write(self, folder: Path, name: str, train: list[int], val: list[int]) -> Path:
        if self.memory:  # once: the splits' CSVs name files
            self._write_images(folder / "images")
        path = folder / f"{name}.csv"
        _write_split(path, {"item": self.item, "classes": self.classes, "items": self.items, "labels": self.labels,
                            "test": self.test}, train, val)
        return path


    def _write_images(self, folder: Path) -> None:
        """The images in memory or in a dataset's rows as files in ``folder`` (``stored_file``); the items name them
        from then on."""
        files = {item: stored_file(folder, item, data) for item, data in self.memory.items()}
        self.items = [str(files.get(i, i)) for i in self.items]
        self.test = [(str(files.get(i, i)), label) for i, label in self.test]
        self.memory = {}


class DetectionPool:
    """Every image of a detection dataset (train and val pooled), with its boxes.

    Splits are seeded random splits of the images; each (seed, shots) split is a folder with a COCO
    ``train.json`` and ``val.json`` that name the original image files by absolute path.
    """

    split_kind = "random (by image)"
    item, noun, columns, test = "image", "images", {}, []

    def __init__(self, task: Task, data: str | Path, val_fraction: float, options: dict[str, Any]) -> None:
        from headstart.tasks.detection.data import discover

        splits = discover(data, val_fraction, 0)
        classes = _class_list(options.get("detection.classes"))
        if classes:
            splits.select_classes(classes)
        self.classes, self.layout = splits.classes, splits.layout
        self.items = splits.train + splits.val
        self.labels = [sorted(set(s.labels.tolist())) for s in self.items]  # the classes present in each image
        self.issues = {k: v for k, v in splits.issues.items() if v}

    def check(self) -> None:
        boxed = sum(bool(labels) for labels in self.labels)
        if len(self.items) < 4 or boxed < 2:
            raise DataError(f"compare needs at least 4 images, 2 of them with boxes, for seeded splits; found "
                            f"{len(self.items)} images, {boxed} with boxes")

    def split(self, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
        order = list(range(len(self.items)))
        random.Random(seed).shuffle(order)
        n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
        train, val = sorted(order[n_val:]), sorted(order[:n_val])
        for what, idx in (("training", train), ("validation", val)):
            if not any(self.labels[i] for i in idx):
                raise DataError(f"Seed {seed}: the {what} split ({len(idx)} images) holds no box: mAP needs boxes "
                                "on both sides; use more images or change --val-fraction")
        return train, val

    def shot_subset(self, train: list[int], shots: int | str, seed: int) -> list[int]:
        """The first ``shots`` images of each class in a seeded order, pooled (nested: 5 shots are in 10)."""
        if shots == "all":
            return train
        order = train[:]
        random.Random(10_007 * seed + 17).shuffle(order)
        kept: set[int] = set()
        for c in range(len(self.classes)):
            kept.update([i for i in order if c in self.labels[i]][: int(shots)])
        return sorted(kept)

    def per_class(self, train: list[int]) -> float:
        """Training images per class (images holding a box of the class), averaged over the classes."""
        return statistics.fmean(sum(c in self.labels[i] for i in train) for c in range(len(self.classes)))

    def write(self, folder: Path, name: str, train: list[int], val: list[int]) -> Path:
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for split, idx in (("train", train), ("val", val)):
            _write_coco(target / f"{split}.json", [self.items[i] for i in idx], self.classes)
        return target


class SegmentationPool(DetectionPool):
    """Every image-mask pair of a segmentation dataset (train and val pooled), with the classes it holds.

    Splits are seeded random splits of the images (as detection's); each (seed, shots) split is a folder
    ``images/{train,val}`` + ``masks/{train,val}`` + ``classes.txt`` of links to the original files (masks that
    are not the classes' indices as they are, COCO annotations, and dataset rows written as index PNGs once).
    """

    split_kind = "random (by image)"
    item, noun, columns, test = "image", "images", {}, []

    def __init__(self, task: Task, data: str | Path, val_fraction: float, options: dict[str, Any]) -> None:
        from headstart.tasks.segmentation.data import discover

        splits = discover(data, val_fraction, 0)
        self.classes, self.layout, self.issues = splits.classes, splits.layout, {}
        self.items = splits.train + splits.val
        self.labels = [[c for c, n in enumerate(s.class_pixels) if n] for s in self.items]

    def check(self) -> None:
        if len(self.items) < 4:
            raise DataError(f"compare needs at least 4 image-mask pairs for seeded splits; found {len(self.items)}")

    def split(self, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
        order = list(range(len(self.items)))
        random.Random(seed).shuffle(order)
        n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
        return sorted(order[n_val:]), sorted(order[:n_val])

    def write(self, folder: Path, name: str, train: list[int], val: list[int]) -> Path:
        from PIL import Image

        target = folder / name
        (target / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
        (target / "classes.txt").write_text("".join(f"{c}\n" for c in self.classes))
        masks = folder / "masks"  # rasterised COCO masks, shared by every split folder
        for split, idx in (("train", train), ("val", val)):
            (target / "images" / split).mkdir(parents=True, exist_ok=True)
            (target / "masks" / split).mkdir(parents=True, exist_ok=True)
            for i in idx:
                s = self.items[i]
                stem = f"{i:06d}_{Path(s.image).stem}"
                as_is = s.mask is not None and s.remap is None and s.colours is None and not s.binary
                mask = Path(s.mask).resolve() if as_is else masks / f"{i:06d}.png"
                if not as_is and not mask.exists():  # class indices of colours, void or 0/255 masks, COCO, rows
                    masks.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(s.read_mask()).save(mask)
                if s.data is not None:  # stored in a dataset's row (train:12): its bytes written once, as a file
                    image = stored_file(folder / "images", f"{i:06d}_{s.image.name}", s.data)
                    stem = image.stem
                else:
                    image = Path(s.image).resolve()
                (target / "images" / split / f"{stem}{image.suffix}").symlink_to(image)
                (target / "masks" / split / f"{stem}.png").symlink_to(mask.resolve())
        return target


class MultiLabelPool(DetectionPool):
    """Every tagged image of a multi-label dataset (train and val pooled; test kept aside), with its labels.

    Splits are stratified by each image's rarest label (as the task's own held-out split; exact duplicates on
    one side); each (seed, shots) split is a CSV (path, labels separated by ';', split) naming the original
    files by absolute path. Shots count images carrying each label (as detection's).
    """

    split_kind = "stratified by rarest label"
    item, noun = "path", "images"
    columns = {"data.path_column": "path", "data.label_column": "labels", "data.from_detection": False}

    def __init__(self, task: Task, data: str | Path, val_fraction: float, options: dict[str, Any]) -> None:
        from headstart.core.estimator import build_config
        from headstart.tasks.multilabel.data import SEPARATORS

        splits = self._discover(build_config(task, overrides=options), data, val_fraction)
        odd = [c for c in splits.classes if any(sep in c for sep in SEPARATORS)]
        if odd:
            raise DataError(f"compare writes labels separated by ';' and cannot split label names holding ';' or "
                            f"'|': found {odd}; rename those classes")
        self.classes, self.layout, self.issues = splits.classes, splits.layout, {}
        self.items = splits.train + splits.val
        self.labels = [list(s.label) for s in self.items]
        self.test = [(self._value(s), list(s.label)) for s in splits.test]
        self.stored = [s for s in [*self.items, *splits.test] if getattr(s, "data", None) is not None]

    def _discover(self, cfg: Any, data: str | Path, val_fraction: float) -> Any:
        """The task's own reading of DATA (each image's content key computed: duplicates stay together)."""
        from headstart.tasks.image.data import content_keys
        from headstart.tasks.multilabel.data import discover

        d = cfg.data
        splits = discover(data, val_fraction, 0, d.path_column, d.label_column, d.from_detection, d.group_column)
        if any(not s.key for s in splits.train + splits.val):
            content_keys(splits.train + splits.val)
        return splits

    def check(self) -> None:
        tagged = sum(bool(labels) for labels in self.labels)
        if len(self.items) < 4 or tagged < 2:
            raise DataError(f"compare needs at least 4 images, 2 of them with labels, for seeded splits; found "
                            f"{len(self.items)} images, {tagged} with labels")

    def split(self, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
        counts = defaultdict(int)
        for labels in self.labels:
            for t in labels:
                counts[t] += 1
        strata = [min(labels, key=lambda t: (counts[t], t)) if labels else -1 for labels in self.labels]
        train, val = stratified_split(strata, val_fraction, seed, groups=self._units())
        if not val or not train:
            raise DataError(f"Seed {seed}: {len(self.items)} {self.noun} are too few for a training and a validation "
                            "split; add some or change --val-fraction")
        return train, val

    def _units(self) -> list[str]:
        """What stays on one side of a split: exact duplicates, a patient's images."""
        return merged_units([s.key for s in self.items], [s.group for s in self.items])

    def _value(self, item: Any) -> str:
        return str(Path(item.path).resolve())

    def write(self, folder: Path, name: str, train: list[int], val: list[int]) -> Path:
        path = folder / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.stored:  # once: images in memory or in a dataset's rows as files, which the CSVs name
            files = {self._value(s): str(stored_file(folder / "images", s.path, s.data)) for s in self.stored}
            for s in self.stored:
                s.path, s.data = Path(files[self._value(s)]), None
            self.test = [(files.get(p, p), labels) for p, labels in self.test]
            self.stored = []
        rows = [(self._value(self.items[i]), self.labels[i], split)
                for split, idx in (("train", train), ("val", val)) for i in idx]
        rows += [(p, labels, "test") for p, labels in self.test]
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([self.item, "labels", "split"])
            writer.writerows((p, ";".join(self.classes[t] for t in labels), split) for p, labels, split in rows)
        return path


class TextTagPool(MultiLabelPool):
    """Every tagged text of a multi-label text dataset (train and val pooled; test kept aside): splits as for images
    (an exact duplicate on one side); each (seed, shots) split a CSV (text, labels separated by ';', split)."""

    item, noun = "text", "texts"
    columns = {"text.text_column": "text", "text.label_column": "labels"}

    def _discover(self, cfg: Any, data: str | Path, val_fraction: float) -> Any:
        from headstart.tasks.text.data import discover

        return discover(data, cfg.text.text_column, cfg.text.label_column, val_fraction, 0, tags=True,
                        uncertain=cfg.data.uncertain)

    def check(self) -> None:
        tagged = sum(bool(labels) for labels in self.labels)
        if len(self.items) < 4 or tagged < 2:
            raise DataError(f"compare needs at least 4 texts, 2 of them with labels, for seeded splits; found "
                            f"{len(self.items)} texts, {tagged} with labels")

    def _units(self) -> list[str]:
        return [s.text for s in self.items]

    def _value(self, item: Any) -> str:
        return item.text


def _class_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()] or None
    return list(value) if value else None


def _image_size(path: Path) -> tuple[int, int]:
    """Width and height as displayed (EXIF rotation applied), from the file's header."""
    from headstart.tasks.image.decode import image_header

    return image_header(path)[1:]


def stored_file(folder: Path, name: str | Path, data: Any) -> Path:
    """An image held in memory or stored in a dataset's row (bytes, or ``image.stored.Stored``) as a file in
    ``folder`` named by its item (``train.csv:2`` is ``train.csv_2.png``, the suffix its format's), written once:
    the split files compare writes name files."""
    from headstart.tasks.image.decode import image_header
    from headstart.tasks.image.stored import payload

    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)
    found = next(iter(sorted(folder.glob(f"{stem}.*"))), None) if folder.is_dir() else None
    if found is not None:
        return found
    data = payload(data)
    try:
        kind = image_header(data)[0].lower()
    except Exception:  # noqa: BLE001 - an unreadable image is the reader's to report, under its own name
        kind = "png"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.{ {'jpeg': 'jpg', 'dicom': 'dcm'}.get(kind, kind)}"
    path.write_bytes(data)
    return path


def _file_of(folder: Path, sample: Any) -> Path:
    """The file of a sample's image: its own, else its bytes written in ``folder`` (``stored_file``)."""
    data = getattr(sample, "data", None)
    return Path(sample.path).resolve() if data is None else stored_file(folder, sample.path, data)


def _write_coco(path: Path, samples: list[Any], classes: list[str]) -> None:
    """A COCO instances json of ``samples`` (normalised xyxy boxes) naming the image files by absolute path (images
    stored in a dataset's rows written beside it once, in ``images/``)."""
    images, annotations = [], []
    for image_id, s in enumerate(samples, start=1):
        file = _file_of(path.parent.parent / "images", s)
        try:
            w, h = _image_size(file)
        except Exception:  # noqa: BLE001 - the reader skips and reports an unreadable image; keep its boxes
            w, h = 1, 1
        images.append({"id": image_id, "file_name": str(file), "width": w, "height": h})
        for box, label in zip(s.boxes.tolist(), s.labels.tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h], "area": (x2 - x1) * (y2 - y1) * w * h,
                                "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def make_pool(task: Task, data: str | Path, val_fraction: float, options: dict[str, Any]) -> Any:
    """The pool of ``task`` over DATA (the task's own reader), which splits itself and writes split files."""
    if task.name in ("image", "text"):
        return ClassificationPool(task, data, val_fraction, options)
    if task.name == "detection":
        return DetectionPool(task, data, val_fraction, options)
    if task.name == "segmentation":
        return SegmentationPool(task, data, val_fraction, options)
    if task.name == "multilabel":
        return MultiLabelPool(task, data, val_fraction, options)
    if task.name == "text-multilabel":
        return TextTagPool(task, data, val_fraction, options)
    raise ConfigError(f"compare has no split writer for task '{task.name}' (it knows image, text, detection, "
                      "segmentation, multilabel, text-multilabel)")


def _shot_subset(train: list[int], labels: list[int], shots: int | str, seed: int) -> list[int]:
    """``shots`` training items per class (nested: 5 shots are the first 5 of 10), all for 'all'."""
    if shots == "all":
        return train
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in train:
        by_class[labels[i]].append(i)
    rng = random.Random(10_007 * seed + 17)
    kept = []
    for label in sorted(by_class):
        idx = by_class[label][:]
        rng.shuffle(idx)
        kept += idx[: int(shots)]
    return sorted(kept)


def _write_split(path: Path, pool: dict[str, Any], train: list[int], val: list[int]) -> None:
    classes = pool["classes"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([pool["item"], "label", "split"])
        for split, idx in (("train", train), ("val", val)):
            for i in idx:
                writer.writerow([pool["items"][i], classes[pool["labels"][i]], split])
        for value, label in pool["test"]:
            writer.writerow([value, classes[label], "test"])


def parse_shots(text: str | Sequence[str | int] | None) -> list[int | str]:
    """``"5,10,all"`` -> ``[5, 10, "all"]``."""
    if text is None:
        return ["all"]
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    out: list[int | str] = []
    for p in parts:
        if p == "all":
            out.append("all")
        elif p.isdigit() and int(p) >= 1:
            out.append(int(p))
        else:
            raise ConfigError(f"--shots: expected positive integers or 'all' separated by commas (e.g. 5,10,all), "
                              f"found '{p}'")
    return sorted(set(out), key=lambda s: math.inf if s == "all" else s)


@contextlib.contextmanager
def quiet_output(enabled: bool) -> Iterator[None]:
    """Silence progress bars and messages (warnings still print) while ``enabled``."""
    old = os.environ.get("HEADSTART_QUIET")
    if enabled:
        os.environ["HEADSTART_QUIET"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HEADSTART_QUIET", None)
        else:
            os.environ["HEADSTART_QUIET"] = old


def _planned_epochs(strategy: str, num_groups: int, train_cfg: Any) -> int:
    return sum(p.epochs for p in strategies.plan(strategy, num_groups, train_cfg))


def _check_model(task: Task, model: str) -> None:
    """A model name the task can train, before any data is written."""
    from headstart.core.backbones import hf_text, registry

    try:
        registry.parse(model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if (task.inputs == "texts") != hf_text.is_text_model(model):
        kind = "a text encoder" if task.inputs == "texts" else "an image backbone"
        raise ConfigError(f"Model '{model}' cannot train --task {task.name}: it needs {kind} (see 'headstart models')")


def _backbone(task: Task, model: str, cfg: Any) -> Any:
    """The model's backbone with random weights: its layer groups are what the strategies' epoch plans depend on."""
    from headstart.core.backbones import registry

    if task.name == "detection":
        from headstart.tasks.detection.task import create_model, is_tv_detector

        if is_tv_detector(model):
            built = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": model, "pretrained": False})})
            return create_model(built, 1).backbone
    return registry.create_backbone(model, pretrained=False)


# ------------------------------------------------------------------------------------------- compare
def compare(data: str | Path, out: str | Path, task: str = "image", models: Sequence[str] | None = None,
            strategy_names: Sequence[str] = DEFAULT_STRATEGIES, seeds: int = 3,
            shots: Sequence[int | str] | None = None, val_fraction: float = 0.2, epochs: int | None = None,
            overrides: dict[str, Any] | None = None, confidence: float = 0.95, verbose: bool = False) -> dict[str, Any]:
    """Train every (model, strategy, shots, seed) cell on DATA with the task's estimator and summarise; writes ``out``.

    Returns the ``compare.json`` contents. ``scratch`` is the same network from random weights
    with strategy ``full`` and the epochs of the pretrained ``full`` cell, or else the largest
    epoch budget among the pretrained cells.
    """
    from headstart.core.backbones import lora
    from headstart.core.estimator import build_config

    chosen = get_task(task)
    scores = task_scores(chosen)
    headline = scores[0]
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, found {seeds}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction must be between 0 and 1, found {val_fraction}")
    out = Path(out)
    if (out / "compare.json").exists():
        raise ConfigError(f"{out} already holds a comparison (compare.json): choose another --out")
    names = [s.strip() for s in strategy_names if s.strip()]
    if not names:
        raise ConfigError("--strategies is empty: expected e.g. linear,lp-ft,scratch")
    pretrained_names = [n for n in names if n != SCRATCH]
    kinds = {strategies.parse(n, 10**6)[0] for n in pretrained_names}  # K is checked when the backbone is built
    if "lora" in kinds and not chosen.estimator_class().LORA:
        raise ConfigError(f"Strategy 'lora' adapts a classifier's transformer (text encoders, ViTs); "
                          f"--task {chosen.name} cannot use it")
    shot_list = parse_shots(list(shots) if shots is not None else None)
    overrides = dict(overrides or {})
    if "detection.classes" in overrides:
        overrides["detection.classes"] = _class_list(overrides["detection.classes"])
    epoch_override = {"train.epochs": epochs} if epochs is not None else {}
    base = build_config(chosen, overrides=overrides)  # a bad key or value fails before any data is read
    models = list(models or [base.model.name])
    for model in models:
        _check_model(chosen, model)
        if "lora" in kinds and not base.train.lora_targets:
            lora.targets(_backbone(chosen, model, base))  # a network without attention projections: before any data
    pool = make_pool(chosen, data, val_fraction, overrides)
    pool.check()
    started = time.perf_counter()

    # one split file (or folder) per (seed, shots), all pointing at the same files
    split_files: dict[tuple[int, int | str], Path] = {}
    split_sets: dict[int, dict[str, list[int]]] = {}
    per_class: dict[tuple[int, int | str], float] = {}
    for seed in range(seeds):
        train, val = pool.split(seed, val_fraction)
        split_sets[seed] = {"train": train, "val": val}
        for k in shot_list:
            subset = pool.shot_subset(train, k, seed)
            split_files[seed, k] = pool.write(out / "splits", f"seed{seed}-shots{k}", subset, val)
            per_class[seed, k] = pool.per_class(subset)
    cls = chosen.estimator_class()
    columns = {**pool.columns, "data.augment_seed": 0}  # fixed augmentation: the seeds share cached views

    cells: list[dict[str, Any]] = []
    budgets: dict[str, Any] = {}
    shown: set[str] = set()
    total = len(models) * len(shot_list) * seeds * len(names)
    done = 0
    for model in models:
        train_cfg = build_config(chosen, overrides={**overrides, **epoch_override, "model.name": model})
        num_groups = _backbone(chosen, model, train_cfg).num_groups
        planned = {n: _planned_epochs(n, num_groups, train_cfg.train) for n in pretrained_names}
        if "full" in planned:
            scratch_epochs, rule = planned["full"], "the same epochs as the pretrained 'full' cell"
        elif planned:
            top = max(planned, key=planned.get)
            scratch_epochs = planned[top]
            rule = f"the largest epoch budget among the pretrained cells ('{top}': {scratch_epochs} epochs in all phases)"
        else:
            scratch_epochs = _planned_epochs("full", num_groups, train_cfg.train)
            rule = "the default epochs of strategy 'full' (no pretrained cell to match)"
        budgets[model] = {"epochs": scratch_epochs, "rule": rule, "pretrained_epochs": planned}
        for k in shot_list:
            for seed in range(seeds):
                for name in pretrained_names + ([SCRATCH] if SCRATCH in names else []):
                    done += 1
                    # cells are judged on validation: a refit would cost a second training and change no score;
                    # a cell's report needs no explanations (a pass per shown item): compare's report is read
                    cell_overrides = {**overrides, **columns, "model.name": model, "train.seed": seed,
                                      "train.refit": False, "train.explain": False}
                    if name == SCRATCH:
                        cell_overrides.update({"train.strategy": "full", "model.pretrained": False,
                                               "train.epochs": scratch_epochs})
                    else:
                        cell_overrides.update({"train.strategy": name, **epoch_override})
                    run = out / "runs" / _slug(model) / _slug(name) / f"shots{k}" / f"seed{seed}"
                    say(f"[bold]compare[/] cell {done}/{total}: {model} / {name} / shots {k} / seed {seed}")
                    t0 = time.perf_counter()
                    with quiet_output(not verbose), warnings_once(shown):  # a data warning once, not once per cell
                        estimator = cls(overrides=cell_overrides).fit(split_files[seed, k], out=run)
                    wall = time.perf_counter() - t0
                    cells.append(_cell(estimator, scores, model, name, seed, k, wall, run.relative_to(out),
                                       per_class[seed, k]))
                    c = cells[-1]
                    say("  " + "  ".join(f"{s.label} {c[s.key]:.4f}" for s in scores)
                        + f"  {c['wall_seconds']:.1f} s  {c['images_per_second']:.1f} {pool.noun}/s  cache {c['cache']}")

    summary = summarize(cells, confidence, [s.key for s in scores])
    best = max(summary, key=lambda s: (s["shots"] == shot_list[-1], s[headline.key]["mean"]))
    best_cell = next(c for c in cells if (c["model"], c["strategy"], c["shots"]) ==
                     (best["model"], best["strategy"], best["shots"]) and c["seed"] == 0)
    result: dict[str, Any] = {
        "data": str(data), "task": chosen.name, "layout": pool.layout, "classes": pool.classes,
        "metric": headline.key, "metrics": [{"key": s.key, "label": s.label} for s in scores],
        "items": pool.noun, "split_kind": pool.split_kind,
        "num_items": len(pool.items), "num_test": len(pool.test), "models": models, "strategies": names,
        "seeds": seeds, "shots": shot_list, "val_fraction": val_fraction, "confidence": confidence,
        "scratch_budget": budgets[models[0]] if len(models) == 1 else budgets,
        "images_per_second": f"training {pool.noun} processed ({pool.noun} x epochs run) / training seconds; cached "
                             "phases read stored features, so they count far more per second",
        "splits": {f"seed{s}": {k: len(v) for k, v in sets.items()} for s, sets in split_sets.items()},
        "summary": summary, "cells": cells,
        "cache": {"items_served": sum(c["cache"]["items_served"] for c in cells),
                  "items_computed": sum(c["cache"]["items_computed"] for c in cells)},
        "best": {**best, "run": best_cell["run"], "seed": 0},
        "verdict": verdict(summary, shot_list[-1], headline.key, headline.label),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "config": _task_config(build_config(chosen, overrides={**overrides, **columns, **epoch_override}), chosen),
        "environment": html_report.environment(cells[0].get("device"), {"seeds": list(range(seeds)),
                                                                      "data.augment_seed": 0}),
    }
    if chosen.name == "detection":
        result["shots_unit"] = "images holding a box of the class, per class"
        result["data_issues"] = pool.issues
    if chosen.name in ("multilabel", "text-multilabel"):
        result["shots_unit"] = f"{pool.noun} carrying the label, per label"
        result["baseline"] = {"key": "baseline_map", "name": "each label's training frequency as every item's score"}
        result["verdict"] = (result["verdict"] + baseline_sentence(summary, shot_list[-1])).strip()
    if isinstance(result["scratch_budget"], dict) and len(models) == 1:
        result["scratch_budget"]["strategy"] = "full"
    _write_outputs(out, result)
    return result


def _task_config(cfg: Any, task: Task) -> dict[str, Any]:
    """The resolved config without the sections only other tasks read."""
    data = cfg.to_dict()
    for section in ("text", "detection", "segmentation"):
        if section != task.section:
            data.pop(section, None)
    return data


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


def _cell(estimator: Any, scores: Sequence[Score], model: str, strategy: str, seed: int, shots: int | str,
          wall: float, run: Path, train_per_class: float) -> dict[str, Any]:
    m = estimator.metrics_
    epochs_run = len(estimator.history_)
    train_seconds = float(m.get("train_seconds") or 0.0)
    processed = m["num_train"] * epochs_run
    cell: dict[str, Any] = {"model": model, "strategy": strategy, "seed": seed, "shots": shots}
    cell.update({s.key: m[s.source] for s in scores})
    if m.get("test"):  # the data's own test split (classification, multi-label)
        cell.update({f"test_{s.key}": m["test"][s.key] for s in scores if s.key in m["test"]})
        if "map" in (m["test"].get("baseline") or {}):  # multi-label: the frequency baseline on the test split
            cell["test_baseline_map"] = m["test"]["baseline"]["map"]
    cell.update({
        "wall_seconds": round(wall, 2), "train_seconds": round(train_seconds, 2),
        "images_per_second": round(processed / train_seconds, 2) if train_seconds > 0 else 0.0,
        "epochs": epochs_run, "num_train": m["num_train"], "num_val": m["num_val"],
        "train_per_class": round(train_per_class, 3),
        "cache": m.get("cache", {"items_served": 0, "items_computed": 0}), "device": m.get("device"),
        "warnings": m["val"].get("warnings", []), "run": str(run),
    })
    per_class = m["val"].get("per_class", {})
    if per_class and all("ap_50" in v for v in per_class.values()):  # detection: AP per class
        cell["per_class_ap_50"] = {c: v["ap_50"] for c, v in per_class.items()}
    return cell


def summarize(cells: Sequence[dict[str, Any]], confidence: float = 0.95,
              metrics: Sequence[str] = ("accuracy", "macro_f1")) -> list[dict[str, Any]]:
    """One row per (model, strategy, shots): mean and CI over seeds of each score, mean time."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[c["model"], c["strategy"], c["shots"]].append(c)
    rows = []
    for (model, strategy, shots), group in groups.items():
        row: dict[str, Any] = {"model": model, "strategy": strategy, "shots": shots, "n": len(group)}
        row.update({key: mean_ci([c[key] for c in group], confidence) for key in metrics})
        row.update({
            "wall_seconds": mean_ci([c["wall_seconds"] for c in group], confidence),
            "images_per_second": mean_ci([c["images_per_second"] for c in group], confidence),
            "train_per_class": statistics.fmean(c["train_per_class"] for c in group),
        })
        rows.append(row)
    return rows


def verdict(summary: Sequence[dict[str, Any]], shots: int | str, metric: str = "accuracy",
            label: str = "accuracy") -> str:
    """One sentence: the best pretrained strategy against scratch on ``metric``, with whether the CIs overlap."""
    rows = [s for s in summary if s["shots"] == shots]
    scratch = [s for s in rows if s["strategy"] == SCRATCH]
    pretrained = [s for s in rows if s["strategy"] != SCRATCH]
    if not scratch or not pretrained:
        return ""
    best = max(pretrained, key=lambda s: s[metric]["mean"])
    base = max(scratch, key=lambda s: s[metric]["mean"])
    gap = best[metric]["mean"] - base[metric]["mean"]
    a, b = best[metric], base[metric]
    if a["low"] is None or b["low"] is None:
        sure = "one seed only: no interval, run --seeds 3 or more to know"
    elif a["low"] > b["high"] or b["low"] > a["high"]:
        sure = "the 95% intervals do not overlap"
    else:
        sure = "the 95% intervals overlap: the difference is not established"
    word = "beats" if gap > 0 else "does not beat"
    return (f"{best['model']} / {best['strategy']} {word} training from scratch by {gap * 100:+.1f} {label} points "
            f"({a['mean']:.3f} vs {b['mean']:.3f}; {sure}), at {best['wall_seconds']['mean']:.0f} s vs "
            f"{base['wall_seconds']['mean']:.0f} s per run.")


def baseline_sentence(summary: Sequence[dict[str, Any]], shots: int | str) -> str:
    """Multi-label: the best cell's mAP against the label-frequency baseline on the same validation splits."""
    rows = [s for s in summary if s["shots"] == shots and "baseline_map" in s]
    if not rows:
        return ""
    best = max(rows, key=lambda s: s["map"]["mean"])
    gap = best["map"]["mean"] - best["baseline_map"]["mean"]
    return (f" Predicting each label's training frequency scores mAP {best['baseline_map']['mean']:.3f} on the same "
            f"validation splits: {best['model']} / {best['strategy']} is {gap * 100:+.1f} mAP points above it.")


# -------------------------------------------------------------------------------------------- outputs
def result_scores(result: dict[str, Any]) -> list[dict[str, str]]:
    """The scores a comparison reports (``{"key", "label"}``, headline first); accuracy and macro-F1 by default."""
    return result.get("metrics") or [{"key": s.key, "label": s.label} for s in CLASSIFICATION_SCORES]


def _write_outputs(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(result, out / "compare.json")
    plot_scores(result, out / "scores.png")
    if len(result["shots"]) > 1:
        plot_shots(result, out / "shots.png")
    plot_time(result, out / "time.png")
    html_report.write_compare_report(out, result)
    print_table(result)
    say(f"Comparison folder: [bold]{out}[/] (report.html, compare.json, scores.png, time.png"
        + (", shots.png" if len(result["shots"]) > 1 else "") + ")")


def _label(s: dict[str, Any], several_models: bool) -> str:
    return f"{s['model']}\n{s['strategy']}" if several_models else s["strategy"]


def _err(stat: dict[str, Any]) -> float:
    return stat["half_width"] or 0.0


def plot_scores(result: dict[str, Any], path: Path) -> None:
    """Every score per (model, strategy), mean with CI bars (largest shots)."""
    import matplotlib.pyplot as plt

    rows = [s for s in result["summary"] if s["shots"] == result["shots"][-1]]
    metrics = result_scores(result)
    several = len(result["models"]) > 1
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows) + 2), 4))
    width = 0.76 / len(metrics)
    colours = ("#3b75af", "#72a9d6", "#a6cbe8", "#d0e3f3")
    for j, m in enumerate(metrics):
        ax.bar([i + (j - (len(metrics) - 1) / 2) * width for i in x], [s[m["key"]]["mean"] for s in rows], width,
               yerr=[_err(s[m["key"]]) for s in rows], capsize=4, label=m["label"],
               color=["#9aa5b8" if s["strategy"] == SCRATCH else colours[j % len(colours)] for s in rows])
    ax.set_xticks(list(x), [_label(s, several) for s in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("validation score")
    ax.set_title(f"Mean over {result['seeds']} seed(s), {result['confidence']:.0%} CI (scratch in grey)")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_class_axis(result: dict[str, Any]) -> str:
    if result.get("task") in ("multilabel", "text-multilabel"):
        return f"training {result.get('items', 'images')} per label (carrying it)"
    return ("training images per class (holding a box of it)" if result.get("task") == "detection"
            else f"training {result.get('items', 'examples')} per class")


def plot_shots(result: dict[str, Any], path: Path) -> None:
    """Learning curve: the headline score against training examples per class, one line per (model, strategy)."""
    import matplotlib.pyplot as plt

    head = result_scores(result)[0]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in result["summary"]:
        lines[s["model"], s["strategy"]].append(s)
    for (model, strategy), rows in lines.items():
        rows.sort(key=lambda s: s["train_per_class"])
        label = f"{model} / {strategy}" if len(result["models"]) > 1 else strategy
        ax.errorbar([s["train_per_class"] for s in rows], [s[head["key"]]["mean"] for s in rows],
                    yerr=[_err(s[head["key"]]) for s in rows], marker="o", capsize=3, label=label,
                    linestyle="--" if strategy == SCRATCH else "-")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ticks = sorted({round(s["train_per_class"], 1) for s in result["summary"]})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_per_class_axis(result))
    ax.set_ylabel(f"validation {head['label']}")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time(result: dict[str, Any], path: Path) -> None:
    """The headline score against mean wall seconds per cell (largest shots), CI bars."""
    import matplotlib.pyplot as plt

    head = result_scores(result)[0]
    rows = [s for s in result["summary"] if s["shots"] == result["shots"][-1]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in rows:
        ax.errorbar([s["wall_seconds"]["mean"]], [s[head["key"]]["mean"]], yerr=[_err(s[head["key"]])],
                    marker="s" if s["strategy"] == SCRATCH else "o", capsize=3)
        ax.annotate(_label(s, len(result["models"]) > 1).replace("\n", " / "),
                    (s["wall_seconds"]["mean"], s[head["key"]]["mean"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set_xlim(left=0)
    ax.set_xlabel("wall seconds per run (mean over seeds)")
    ax.set_ylabel(f"validation {head['label']}")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("Score against time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    metrics = result_scores(result)
    table = Table(title=f"headstart compare ({result.get('task', 'image')}): {result['seeds']} seed(s), mean ± "
                        f"{result['confidence']:.0%} CI half-width")
    for col in ("model", "strategy", "shots", *(m["label"] for m in metrics), "wall s",
                f"{result.get('items', 'images')}/s"):
        table.add_column(col, justify="left" if col in ("model", "strategy") else "right")
    for s in result["summary"]:
        table.add_row(s["model"], s["strategy"], str(s["shots"]), *(html_report.fmt_ci(s[m["key"]]) for m in metrics),
                      f"{s['wall_seconds']['mean']:.1f}", f"{s['images_per_second']['mean']:.1f}")
    console.print(table)
    if result.get("verdict"):
        console.print(result["verdict"])
    budget = result.get("scratch_budget") or {}
    if "epochs" in budget:
        console.print(f"[dim]scratch: strategy 'full' from random weights for {budget['epochs']} epoch(s), "
                      f"{budget['rule']}[/]")
