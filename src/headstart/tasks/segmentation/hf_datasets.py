"""Segmentation data as Hugging Face ``datasets`` holds it: rows of two ``Image`` columns, an image and its mask
(``segments/sidewalk-semantic``'s ``pixel_values`` and ``label``, ``scene_parse_150``'s ``image`` and
``annotation``: ``image.hf_datasets.image_and_mask`` tells which is which), as a Hub repository's Parquet files
(``data/train-00000-of-00001.parquet``...; one file alone is the training split) or a ``save_to_disk`` folder.

The class of each mask value is named by the repository's ``id2label.json`` (``{"0": "unlabeled", "1":
"flat-road", ...}``, as the transformers semantic segmentation guide reads it), else by a class file beside the data
(``classes.txt``, ``class_dict.csv``...: ``data._class_file``); without either the masks must be binary. Images and
masks stay where the dataset stores them and are read when needed (``image.hf_datasets.ParquetRow`` /
``DatasetRow``), so memory stays flat in the number of rows.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from headstart.errors import DataError
from headstart.progress import progress_bar
from headstart.tasks.image.hf_datasets import image_and_mask, split_rows
from headstart.tasks.segmentation.data import (
    BINARY_CLASSES,
    MAX_CLASSES,
    SegmentationSplits,
    SegSample,
    _binary_masks,
    _class_file,
    _class_table,
    _finish,
    ignored_classes,
)
from headstart.tasks.tables import SPLIT_VALUES
from headstart.tasks.text import is_datasets_folder

ID2LABEL = "id2label.json"


def id2label_names(path: Path) -> list[str]:
    """The class names of an ``id2label.json`` (``{"0": "background", "1": "road"}``), by id: each of 0..K-1 once."""
    try:
        found = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as JSON: {exc}") from exc
    if isinstance(found, dict) and isinstance(found.get("id2label"), dict):  # a model's config.json
        found = found["id2label"]
    try:
        named = {int(k): str(v).strip() for k, v in found.items()}
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: expected an object of class ids and names ({{\"0\": \"background\", \"1\": "
                        f"\"road\", ...}}), found {str(found)[:80]!r}") from None
    if sorted(named) != list(range(len(named))):
        raise DataError(f"{path}: its ids are {sorted(named)[:12]}; expected each of 0, 1, 2... once (the mask values)")
    if len(named) > MAX_CLASSES:
        raise DataError(f"{path} names {len(named)} classes; at most {MAX_CLASSES} fit in 8-bit masks (255 = ignore)")
    return [named[i] for i in range(len(named))]


def _names_file(root: Path) -> Path | None:
    """The ``id2label.json`` of the repository: beside the Parquet files or the folder, or above its ``data/``."""
    folder = root if root.is_dir() else root.parent
    return next((f / ID2LABEL for f in (folder, folder.parent) if (f / ID2LABEL).is_file()), None)


def read_hf_segmentation(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    """The image-mask pairs of each split (train, validation, test; a seeded validation split when none is given),
    checked as every layout's are (``data._finish``)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{root} is a Hugging Face dataset of images and masks; reading it needs: "
                        "pip install datasets") from None
    parts = split_rows(root, datasets)
    names, classes_file = _names_file(root), None
    if names is not None:
        classes, remap, void = ignored_classes(id2label_names(names))
        colours, notes = None, [f"class(es) {void} of {ID2LABEL} mark unlabelled pixels: ignored (255), not learned "
                                "or scored"] if void else []
    else:
        classes_file = _class_file(root if root.is_dir() else root.parent, required=False, layout="dataset")
        classes, remap, colours, notes = (_class_table(classes_file) if classes_file is not None
                                          else (list(BINARY_CLASSES), None, None, []))
    splits = SegmentationSplits(classes, [], [], read=notes)
    given: dict[str, list[SegSample]] = {}
    described, columns = [], ("", "")
    for name, (features, rows) in parts.items():
        split = SPLIT_VALUES.get(name.lower())
        if split is None:
            splits.notes.append(f"{root.name}/{name}: a split that is not train, validation or test, not read")
            continue
        icol, mcol = image_and_mask([c for c, f in features.items() if isinstance(f, datasets.Image)])
        if icol is None or mcol is None:
            raise DataError(f"{root}/{name}: expected two Image columns, the images and their masks; its columns: "
                            f"{', '.join(features)}")
        columns = (icol, mcol)
        samples = given.setdefault(split, [])
        with progress_bar(f"Reading {root.name}/{name}", rows.count) as advance:
            for i, (record, stored) in enumerate(rows(icol)):
                advance()
                where = root / f"{name}:{i}"
                if not record.get(mcol):
                    splits.skipped.append((str(where), f"no mask in the row's '{mcol}' column"))
                    continue
                samples.append(SegSample(where, data=stored, mask_data=dataclasses.replace(stored, column=mcol),
                                         colours=colours, remap=remap))
        described.append(f"{name}/ {len(samples)}")
    given = {split: samples for split, samples in given.items() if samples}
    if "train" not in given:
        raise DataError(f"{root}: no training rows with a mask among its splits ({', '.join(parts)})")
    what = "datasets folder" if is_datasets_folder(root) else "Parquet files"
    splits.layout = f"{what} {root.name} ({', '.join(described)}; images '{columns[0]}', masks '{columns[1]}')"
    if names is not None:
        splits.read.insert(0, f"classes named by {names}")
        return _finish(splits, given, str(names), val_fraction, seed, root)
    if classes_file is not None:
        return _finish(splits, given, str(classes_file), val_fraction, seed, root)
    classes_from, note = _binary_masks(root, [s for part in given.values() for s in part], f"the {what}",
                                       f"an {ID2LABEL} ({{\"0\": \"background\", \"1\": \"road\", ...}}) or a classes.txt")
    splits.read.append(note)
    return _finish(splits, given, classes_from, val_fraction, seed, root)
