"""Multi-label image data: each image carries a set of labels (tags), possibly none.

Layouts of DATA:
  * a CSV with a path column and a labels column holding several labels separated by ``;`` or ``|``
    (an empty cell: no label), or one 0/1 column per class; optional ``split`` column (train/val/test);
  * a folder holding such a CSV as ``labels.csv`` (paths relative to the folder);
  * a Hugging Face dataset of images with a list of labels each (a ``Sequence`` of ``ClassLabel``, or of strings):
    Hub Parquet files or a ``save_to_disk`` folder (``image.hf_datasets``), its splits as given;
  * with ``data.from_detection=true`` (``--from-detection``): a detection set turned into image tags (the
    classes of each image's boxes): a YOLO folder (``data.yaml``), a COCO json, or a Pascal VOC folder
    (``JPEGImages/``, ``Annotations/*.xml``, ``ImageSets/Main/{train,val,test}.txt``); a VOC or YOLO
    folder (without labels.csv) is read so under ``--task multilabel`` without the flag too.

Labels are kept as a sorted tuple of class indices on ``Sample.label``; the datasets hand the loop a
multi-hot float row per image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torchvision.transforms import v2

from headstart.core.backbones.spec import BackboneSpec
from headstart.core.splits import (
    Splits,
    group_by_path,
    group_column,
    group_note,
    merged_units,
    no_groups,
    stratified_split,
)
from headstart.errors import DataError
from headstart.tasks.columns import POSITIVE, SPLIT_COLUMN, UNCERTAIN, by_content, flag_columns, listed
from headstart.tasks.flips import DEFAULT, Flips
from headstart.tasks.image import hf_datasets
from headstart.tasks.image.data import (
    LABEL_COLUMNS,
    MAX_PIXELS,
    PATH_COLUMNS,
    TABLE_SKIP,
    Sample,
    _check_given_splits,
    _pick_column,
    content_keys,
    read_table,
    small_given_val,
)
from headstart.tasks.image.dataset import ImageData, ImageDataset
from headstart.tasks.image.transforms import _normalize
from headstart.tasks.multilabel import LABELS_FILE
from headstart.tasks.tables import is_table_file, split_tables, table_files, table_kind

SEPARATORS = (";", "|")
LABELS_COLUMNS = ("labels", "tags", *LABEL_COLUMNS)
VAL_SPLITS = {"val": "val", "valid": "val", "validation": "val", "test": "test", "train": "train", "": "train"}


def split_labels(cell: str, spaces: bool = False) -> list[str]:
    """The labels of one cell: ``a;b``, ``a|b`` or ``a`` (blanks around them dropped; empty: none), or a list as
    JSON or Python writes it (``["Drama", "Romance"]``, ``['Drama', 'Romance']``: pandas' lists saved to CSV);
    ``spaces``: a column whose cells hold no ``;`` or ``|`` separates its labels by blanks (``haze primary``,
    Kaggle's Planet)."""
    text = str(cell or "")
    items = listed(text)
    if items is not None:
        return items
    if spaces:
        return text.split()
    for sep in SEPARATORS[1:]:
        text = text.replace(sep, SEPARATORS[0])
    return [part.strip() for part in text.split(SEPARATORS[0]) if part.strip()]


def list_column(columns: Sequence[str], rows: Sequence[dict[str, Any]], exclude: Sequence[str]) -> str | None:
    """The one column (besides ``exclude``) whose cells are label lists: in 1% or more of the rows a ``;`` or ``|``
    separates two labels, and its labels repeat (fewer than a tenth as many as the rows, at most 1,000): the
    'Finding Labels' of NIH ChestX-ray14 (``Effusion|Infiltration``). None when no column or several are."""
    head = rows[:2000]
    found = []
    for c in columns:
        if c in exclude:
            continue
        cells = [split_labels(r.get(c)) for r in head]
        labels = {label for cell in cells for label in cell}
        if sum(len(cell) > 1 for cell in cells) >= max(1, 0.01 * len(head)) and len(labels) <= min(1000, len(head) / 10):
            found.append(c)
    return found[0] if len(found) == 1 else None


def blank_separated(cells: Sequence[str]) -> bool:
    """Whether a labels column separates its labels by blanks: no cell holds ``;`` or ``|``, some hold a blank."""
    texts = [str(c or "").strip() for c in cells]
    return not any(sep in t for t in texts for sep in SEPARATORS) and any(" " in t for t in texts)


def words_are_labels(cells: Sequence[str]) -> bool:
    """Whether the words of a blank-separated column's cells of several words are labels of cells of one (fastai's
    PASCAL VOC 2007 ``labels``: ``car person`` beside ``car`` and ``person``); ``golden retriever`` is one label."""
    texts = [str(c or "").strip() for c in cells]
    alone = {t for t in texts if t and " " not in t}
    words = [w for t in texts if " " in t for w in t.split()]
    return bool(words) and sum(w in alone for w in words) >= 0.9 * len(words)


def multi_hot(tags: Sequence[int], num_classes: int) -> torch.Tensor:
    """A float row with 1 at each of ``tags``."""
    row = torch.zeros(num_classes)
    row[list(tags)] = 1.0
    return row


def _table_of(root: Path) -> Path:
    if root.is_dir() and split_tables(root):  # a table in each split folder (Roboflow's _classes.csv): read as one
        return root
    if root.is_dir():
        table = root / LABELS_FILE
        if not table.is_file():
            table = _tag_table_in(root) or table
        if not table.is_file():
            raise DataError(f"{root}: expected {LABELS_FILE} inside (a path column and a labels column, or one 0/1 "
                            "column per class), or pass --from-detection for a YOLO, COCO or Pascal VOC folder")
        return table
    if not is_table_file(root):
        raise DataError(f"{root}: expected a .csv/.tsv (or Excel .xlsx, JSON Lines .jsonl) file of image paths and "
                        f"labels, or a folder with {LABELS_FILE}")
    return root


class Tags(NamedTuple):
    """A tag table: each row as ``(line, image path, labels, split)``, the class names, a description, each row's
    group ('' without a group column) and the group column (``core.splits.group_column``)."""

    rows: list[tuple[int, Path, list[str], str]]
    classes: list[str]
    layout: str
    groups: list[str]
    group_column: str | None


def read_tags(table: Path, path_column: str | None = None, label_column: str | None = None,
              group_by: str | None = None, uncertain: str = "negative") -> Tags:
    """Every row of a tag table, its classes and groups (``Tags``).

    The labels column is ``label_column``, else the first of ``LABELS_COLUMNS`` present; without one,
    every column (besides the path, split and group) holding only 0/1 flags is a class (``columns.flag_columns``:
    blank is 0; -1, CheXpert's uncertain finding, is read as ``uncertain``: "negative" or "positive").
    """
    parsed = read_table(table, [path_column, label_column])
    rows, columns = parsed.rows, parsed.columns
    gcol = group_column(columns, group_by, [path_column or "", label_column or ""], table)
    pcol = _pick_column(parsed, path_column, PATH_COLUMNS, "path", table, exclude=[gcol] if gcol else [])
    lower = {c.lower(): c for c in columns}
    lcol = label_column or next((lower[c] for c in LABELS_COLUMNS if c in lower and lower[c] != pcol), None)
    if lcol is None and not parsed.header and len(columns) == 2:  # no header line: the column beside the paths
        lcol = next(c for c in columns if c != pcol)
    lcol = lcol or list_column(columns, rows, [pcol, SPLIT_COLUMN, gcol or ""])
    if lcol is not None and lcol not in columns:
        raise DataError(f"{table}: no column '{lcol}' for the labels; columns found: {columns}")
    items = []
    if lcol is not None:
        lists = all(listed(str(r[lcol] or "[]")) is not None for r in rows)  # ['Drama', 'Romance']
        spaces = not lists and blank_separated([r[lcol] for r in rows])
        for line, row in enumerate(rows, start=parsed.first_line):
            items.append((line, row[pcol], split_labels(row[lcol], spaces), row.get(SPLIT_COLUMN, "")))
        if not any(labels for _, _, labels, _ in items):
            raise DataError(f"{table}: column '{lcol}' holds no label in any of its {len(rows)} rows (labels are "
                            f"separated by ';' or '|'; an empty cell means no label)")
        what = f"labels column '{lcol}'" + (", labels separated by blanks (no ';' or '|' in it)" if spaces else
                                            ", lists of labels" if lists else "")
    else:
        flags = flag_columns(columns, rows, (pcol, SPLIT_COLUMN, gcol))
        if not flags:
            raise DataError(f"{table}: cannot tell which column holds the labels; columns found: {columns}. Name it "
                            f"one of {list(LABELS_COLUMNS[:3])} (labels separated by ';' or '|'), give one 0/1 column "
                            "per class, or set data.label_column")
        positive = POSITIVE | (UNCERTAIN if uncertain == "positive" else set())
        for line, row in enumerate(rows, start=parsed.first_line):
            items.append((line, row[pcol], [c for c in flags if str(row[c] or "").strip() in positive],
                          row.get(SPLIT_COLUMN, "")))
        unsure = sum(str(r[c] or "").strip() in UNCERTAIN for r in rows for c in flags)
        what = f"{len(flags)} 0/1 columns" + (f", {unsure} uncertain (-1) label(s) read as {uncertain} "
                                              "(data.uncertain)" if unsure else "")
    classes = sorted({label for _, _, labels, _ in items for label in labels})
    if lcol is None:
        classes = sorted(flags)  # a class column without a positive is still a class
    if len(classes) < 2:
        raise DataError(f"{table}: {len(classes)} distinct label(s) {classes}; multi-label data needs at least 2")
    files, found_as = table_files(table, [file for _, file, _, _ in items])
    resolved = [(line, path, labels, str(split or "").strip().lower())
                for (line, _, labels, split), path in zip(items, files)]
    note = "".join(f"; {n}" for n in (found_as, parsed.describe()) if n)
    groups = [str(r[gcol] or "").strip() if gcol else "" for r in rows]
    layout = f"{table_kind(table)} {table.name} (path column '{pcol}', {what}{note})"
    return Tags(resolved, classes, layout + (f", {group_note(groups, gcol, 'images')}" if gcol else ""), groups, gcol)


def _check_images(table: Path, rows: list[tuple[int, Path, list[str], str]]) -> None:
    missing = [(line, path) for line, path, _, _ in rows if not path.is_file()]
    if missing:
        shown = "; ".join(f"{table.name}:{line}: {path}" for line, path in missing[:5])
        raise DataError(f"{len(missing)} row(s) of {table} name an image that does not exist: {shown}"
                        + (" ..." if len(missing) > 5 else "") + ". Fix the paths (relative to the CSV's folder) or "
                        "remove the rows")


def _samples(rows: list[tuple[int, Path, list[str], str]], classes: list[str], groups: Sequence[str]) -> list[Sample]:
    return [Sample(path, tuple(sorted({classes.index(label) for label in labels})), group=group)
            for (_, path, labels, _), group in zip(rows, groups)]


def discover(data: str | Path, val_fraction: float = 0.2, seed: int = 0, path_column: str | None = None,
             label_column: str | None = None, from_detection: bool = False, group_by: str | None = None,
             small_val: str = "hold_out", uncertain: str = "negative") -> Splits:
    """The classes and train/val(/test) samples of multi-label DATA (images not read yet)."""
    root = Path(data)
    if not root.exists():
        raise DataError(f"Data not found: {root}")
    if from_detection or is_detection_folder(root):
        return _from_detection(root, val_fraction, seed)
    if hf_datasets.is_image_dataset(root):
        splits = _from_datasets(root, label_column)
        if not splits.val:
            held_out_split(splits, splits.train, val_fraction, seed)
        return splits
    table = _table_of(root)
    tags = read_tags(table, path_column, label_column, group_by, uncertain)
    rows, classes, layout = tags.rows, tags.classes, tags.layout
    _check_images(table, rows)
    samples = _samples(rows, classes, tags.groups)
    splits = Splits(classes, [], [], layout=layout)
    if any(split for *_, split in rows):
        unknown = sorted({split for *_, split in rows if split not in VAL_SPLITS})
        if unknown:
            raise DataError(f"{table}: the 'split' column has value(s) {unknown}; expected train, val or test")
        for sample, (*_, split) in zip(samples, rows):
            getattr(splits, VAL_SPLITS[split]).append(sample)
        splits.layout += ", 'split' column"
        if not splits.val:  # train (and test) rows only: validation held out of the train rows
            if not splits.train:
                raise DataError(f"{table}: the 'split' column has no train rows")
            splits.layout += " (no val rows)"
            held_out_split(splits, splits.train, val_fraction, seed, not no_groups(group_by))
            _check_given_splits(splits, tags.group_column)
            return splits
        _check_given_splits(splits, tags.group_column)
        return small_given_val(splits, val_fraction, seed, "the 'split' column's val rows", small_val,
                               lambda s, items: held_out_split(s, items, val_fraction, seed, not no_groups(group_by)))
    return held_out_split(splits, samples, val_fraction, seed, not no_groups(group_by))


def held_out_split(splits: Splits, samples: list[Sample], val_fraction: float, seed: int,
                   by_path: bool = False) -> Splits:
    """A seeded validation split stratified by each image's rarest label (exact duplicates kept together; ``by_path``:
    the patients the paths name too, ``core.splits.group_by_path``)."""
    counts = Counter(t for s in samples for t in s.label)
    strata = [min(s.label, key=lambda t: (counts[t], t)) if s.label else -1 for s in samples]
    note = group_by_path(samples, strata) if by_path else ""
    content_keys(samples)
    train, val = stratified_split(strata, val_fraction, seed,
                                  groups=merged_units([s.key for s in samples], [s.group for s in samples]))
    if not val:
        raise DataError(f"{len(samples)} images are too few for a validation split; add images or a 'split' column")
    splits.train, splits.val = [samples[i] for i in train], [samples[i] for i in val]
    splits.layout += f", {val_fraction:.0%} validation split stratified by rarest label (seed {seed})" + (
        f", {note}" if note else "")
    splits.val_held_out = True
    return splits


def _from_datasets(root: Path, label_column: str | None, only: tuple[str, ...] = ()) -> Splits:
    """The tagged images of a Hugging Face dataset (``hf_datasets.read(tags=True)``) by split (``only`` these), the
    ClassLabel names the classes (else the tags seen, sorted); rows without a list are skipped, each named, and a
    validation or test split of empty lists only (hidden labels) is left out, said."""
    found = hf_datasets.read(root, label_column, only, tags=True)
    for split in [s for s, rows in found.rows.items() if s != "train" and rows and not any(r.label for r in rows)]:
        found.notes.append(f"the {split} split ({len(found.rows[split])} images) has no labels: not read")
        found.rows[split] = []  # a competition's hidden test split: every list empty
    seen = {t for rows in found.rows.values() for r in rows for t in (r.label or ())}
    classes = [c for c in found.classes if c in seen] if found.classes else sorted(seen)
    if len(classes) < 2 and not only:
        raise DataError(f"{root}: {len(classes)} distinct label(s) {classes}; multi-label data needs at least 2")
    splits = Splits(classes, [], [], layout=found.layout, skipped=list(found.skipped), notes=list(found.notes))
    index = {c: i for i, c in enumerate(classes)}
    for split, rows in found.rows.items():
        splits.skipped += [(r.name.name, "no label list") for r in rows if r.label is None]
        getattr(splits, split).extend(Sample(r.name, tuple(sorted({index[t] for t in r.label})), key=r.key,
                                             data=r.data) for r in rows if r.label is not None)
    return splits


# ------------------------------------------------------------------------------------- from detection
def is_detection_folder(root: Path) -> bool:
    """A folder without labels.csv that is plainly a detection set (VOC Annotations/, YOLO data.yaml)."""
    from headstart.tasks.detection import voc_folders

    return root.is_dir() and not (root / LABELS_FILE).is_file() and (
        voc_folders(root) is not None or (root / "data.yaml").is_file())


def _from_detection(root: Path, val_fraction: float, seed: int) -> Splits:
    """Image tags of a detection set (Pascal VOC, YOLO or COCO, read by the detection task's readers)."""
    from headstart.tasks.detection.data import discover as detection_sets

    det = detection_sets(root, val_fraction, seed)
    if len(det.classes) < 2:
        raise DataError(f"{root}: {len(det.classes)} object class(es) {det.classes}; multi-label data needs at least 2")
    splits = Splits(det.classes, [], [], layout=f"{det.layout}, image tags from the boxes",
                    skipped=list(det.skipped), val_held_out=bool(getattr(det, "val_held_out", False)))
    for name in ("train", "val", "test"):
        getattr(splits, name).extend(Sample(s.path, tuple(sorted(set(s.labels.tolist()))))
                                     for s in getattr(det, name))
    return splits


def read_voc_tags(root: Path, val_fraction: float = 0.2, seed: int = 0) -> Splits:
    """A Pascal VOC folder as image tags; splits from ``ImageSets/Main/{train,val,test}.txt`` when present."""
    return _from_detection(Path(root), val_fraction, seed)


# ------------------------------------------------------------------------------------------ evaluation
def labelled_tags(data: str | Path, classes: list[str], path_column: str | None = None,
                  label_column: str | None = None, from_detection: bool = False,
                  uncertain: str = "negative") -> list[Sample]:
    """Samples of labelled evaluation data, tagged with the model's ``classes``.

    The test split when DATA has one, else its validation split, else every row; a label the model
    never saw is an error naming the row. A tag table is read as one even for a model trained with
    ``from_detection``.
    """
    root = Path(data)
    if not root.exists():
        raise DataError(f"Data not found: {root}")
    if hf_datasets.is_image_dataset(root):  # its test split, else its validation split
        found = _from_datasets(root, label_column, ("test",))
        found = found if found.test else _from_datasets(root, label_column, ("val",))
        samples = found.test or found.val
        if not samples:
            raise DataError(f"{root}: no labelled test or validation split to evaluate on")
        unknown = Counter(found.classes[t] for s in samples for t in s.label if found.classes[t] not in classes)
        if unknown:
            raise DataError(f"{root} has labels the model never saw: {dict(unknown)}. The model knows: "
                            f"{', '.join(classes)}. Remove them or train a model that includes them")
        return [Sample(s.path, tuple(sorted({classes.index(found.classes[t]) for t in s.label})), key=s.key,
                       data=s.data) for s in samples]
    table = root / LABELS_FILE if root.is_dir() else root
    if (from_detection and not (table.is_file() and is_table_file(table))) or \
            is_detection_folder(root):
        found = _from_detection(root, 0.2, 0)
        rows = [(f"{s.path}", s.path, [found.classes[t] for t in s.label], "")
                for s in (found.test or found.val or found.train)]
        where = str(root)
    else:
        table = _table_of(root)
        listed = read_tags(table, path_column, label_column, uncertain=uncertain).rows
        _check_images(table, listed)
        wanted = "test" if any(r[3] == "test" for r in listed) else "val" if any(
            VAL_SPLITS.get(r[3]) == "val" for r in listed) else None
        rows = [(f"{table.name}:{line}", path, labels, split) for line, path, labels, split in listed
                if wanted is None or VAL_SPLITS.get(split) == wanted]
        where = str(table)
    unknown = [(row, label) for row, _, labels, _ in rows for label in labels if label not in classes]
    if unknown:
        seen = Counter(label for _, label in unknown)
        first = "; ".join(f"{row}: '{label}'" for row, label in unknown[:3])
        raise DataError(f"{where} has labels the model never saw: {dict(seen)} ({first}). The model knows: "
                        f"{', '.join(classes)}. Remove them or train a model that includes them")
    return [Sample(path, tuple(sorted({classes.index(lab) for lab in labels}))) for _, path, labels, _ in rows]


# ------------------------------------------------------------------------------------------- datasets
class TagDataset(ImageDataset):
    """``(tensor, multi-hot float row)`` pairs (an unlabelled image: all zeros)."""

    num_classes = 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, tags = super().__getitem__(index)
        return x, multi_hot(() if tags == -1 else tags, self.num_classes)


def eval_transform(spec: BackboneSpec) -> v2.Compose:
    """The whole image resized to the model's input square: a center crop could cut a tagged object away."""
    return v2.Compose([v2.Resize((spec.input_size, spec.input_size), antialias=True), *_normalize(spec)])


def train_transform(spec: BackboneSpec, augment: str = "standard", flips: Flips = DEFAULT) -> v2.Compose:
    """The whole image (no random crops: they cut tagged objects away), ``flips``; ``standard`` adds colour jitter."""
    steps = [v2.Resize((spec.input_size, spec.input_size), antialias=True)]
    if augment != "none":
        steps += flips.steps()
    if augment == "standard":
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2))
    return v2.Compose([*steps, *_normalize(spec)])


class TagData(ImageData):
    """The multi-label splits read through one ImageStore, as the training loop needs them; whole images."""

    DATASET = TagDataset

    def __init__(self, splits: Splits, spec: BackboneSpec, preload_mb: int = 2048, strict: bool = False,
                 augment: str = "standard", seed: int = 0, intensity: str = "off",
                 max_pixels: int | None = MAX_PIXELS, flips: Flips = DEFAULT) -> None:
        super().__init__(splits, spec, preload_mb, strict, augment, seed, intensity, max_pixels, flips)
        self.train_tf, self.eval_tf = train_transform(spec, augment, flips), eval_transform(spec)

    def check_readable(self, splits: Splits, everything: list[Sample]) -> None:
        """A class with no readable training image is named in a note (it cannot be learned)."""
        ok = {id(s) for s in self.store.samples}
        seen = {t for s in splits.train if id(s) in ok for t in s.label}
        lost = [c for i, c in enumerate(splits.classes) if i not in seen]
        if lost:
            splits.notes.append(f"{len(lost)} label(s) are on no (readable) training image and cannot be learned: "
                                f"{', '.join(lost[:10])}")

    def class_counts(self, split: str) -> dict[str, int]:
        counts = Counter(t for s in self.splits[split] for t in s.label)
        return {c: counts[i] for i, c in enumerate(self.classes)}

    def labels(self, split: str) -> torch.Tensor:
        rows = [multi_hot(s.label, len(self.classes)) for s in self.splits[split]]
        return torch.stack(rows) if rows else torch.zeros(0, len(self.classes))

    def dataset(self, split: str, train: bool, epoch: int) -> TagDataset:
        ds = super().dataset(split, train, epoch)
        ds.num_classes = len(self.classes)
        return ds


def _tag_table_in(folder: Path) -> Path | None:
    """The one table of tags in ``folder`` besides labels.csv (a poster set's ``train.csv`` of ``Id, Genre`` lists
    beside ``Images/``; not a submission or test table), else None."""
    found = [t for t in sorted(folder.iterdir()) if is_table_file(t) and t.name != LABELS_FILE
             and not TABLE_SKIP.search(t.stem.lower()) and looks_like_multilabel(t)]
    return found[0] if len(found) == 1 else None


def looks_like_multilabel(data: str | Path) -> bool:
    """True when DATA is a CSV (or a folder with labels.csv) whose labels column clearly holds label lists.

    Unambiguous only: a column named ``labels``/``tags`` (or a label column) where some cells hold a
    ``;`` or ``|`` separator between two labels (or, in a column named ``tags``, blanks), the paths being image files
    (or ids of image files in a folder beside the table).
    """
    root = Path(data)
    table = root / LABELS_FILE if root.is_dir() else root
    if root.is_dir() and split_tables(root):
        table = root
    elif root.is_dir() and not table.is_file():
        return _tag_table_in(root) is not None
    elif not table.is_file() or not is_table_file(table):
        return False
    try:
        parsed = read_table(table)
    except (DataError, OSError):
        return False
    rows, columns = parsed.rows, parsed.columns
    lower = {c.lower(): c for c in columns}
    pcol = next((lower[c] for c in PATH_COLUMNS if c in lower), None) or by_content("path", columns, rows)
    lcol = next((lower[c] for c in LABELS_COLUMNS if c in lower), None)
    if not parsed.header and len(columns) == 2:  # no header line: image paths and the column beside them
        pcol = by_content("path", columns, rows)
        lcol = next((c for c in columns if c != pcol), None) if pcol else None
    lcol = lcol or (list_column(columns, rows, [pcol, SPLIT_COLUMN]) if pcol else None)
    head = rows[:200]
    flags = flag_columns(columns, head, [pcol, SPLIT_COLUMN]) if pcol and lcol is None else []
    if pcol is None or (lcol is None and len(flags) < 2):
        return False
    from headstart.tasks.image.data import IMAGE_EXTENSIONS

    images = (all(Path(str(r[pcol] or "")).suffix.lower() in IMAGE_EXTENSIONS for r in head)
              or bool(table_files(table, [r[pcol] for r in head[:50]])[1]))  # ids of image files beside the table
    if lcol is None:  # one 0/1 column per class (CheXpert): a row with two 1s is not one label (ISIC's one-hot)
        return images and any(sum(str(r[c] or "").strip() in POSITIVE for c in flags) > 1 for r in head)
    cells = [r[lcol] for r in head]  # 'tags' of blank-separated words, or words that are labels alone elsewhere
    spaces = blank_separated(cells) and (lcol.lower() == "tags" or words_are_labels(cells))
    return images and any(len(split_labels(r[lcol], spaces)) > 1 for r in head)
