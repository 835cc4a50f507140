"""Which images and labels DATA holds: its layout discovered (``discover``), its splits, the items to evaluate
(``labelled_samples``) or predict (``image_samples``). Reading the files is ``dataset.py``'s concern.

Layouts of DATA:
  * a folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``; optional ``test/``) class folders;
  * a folder of class subfolders (a seeded, stratified validation split is made);
  * a CSV file with a path column and a label column (optional ``split`` column: train/val/test);
  * the readers of ``pixel_tables.py``, ``arrays.py``, ``hf_datasets.py`` and ``listed.py``, whose items become
    the same ``Sample`` splits here.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headstart.core.splits import (
    Splits,
    duplicate_groups,
    group_by_path,
    group_column,
    group_note,
    merged_units,
    no_groups,
    split_notes,
    straddling_groups,
    stratified_split,
)
from headstart.errors import DataError
from headstart.tasks.columns import SPLIT_COLUMN, by_content, folded_class, one_hot_columns, one_spelling, pick_column
from headstart.tasks.exports import as_table, export_splits, is_export
from headstart.tasks.formats import not_data_hint, unread_note
from headstart.tasks.image import arrays, hf_datasets
from headstart.tasks.image.class_names import alias, name_classes
from headstart.tasks.image.decode import (  # noqa: F401
    IMAGE_EXTENSIONS,
    MEMORY_NAME,
    image_files,
    image_header,
    in_memory,
    is_image_file,
    predict_items,
    quiet_pil,
    too_large_reason,
    unreadable_reason,
)
from headstart.tasks.image.listed import Listed, listed
from headstart.tasks.image.pixel_tables import (
    PixelRow,
    PixelTable,
    pixel_table,
    prediction_items,
    read_rows,
    tables_in,
)
from headstart.tasks.image.stored import Stored, payload
from headstart.tasks.segmentation import split_masks
from headstart.tasks.tables import (
    IMAGE_SUFFIXES,
    UNLABELLED_FOLDERS,
    Table,
    is_table_file,
    read_delimited,
    read_text_file,
    split_of_name,
    split_tables,
    table_files,
    table_kind,
)

VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test", "testing", "test1")  # test1/: Kaggle's Dogs vs. Cats
SPLIT_WORDS = {"train": ("train", "training", "trainset"), "val": VAL_NAMES, "test": TEST_NAMES}
PATH_COLUMNS = ("path", "image", "file", "filename", "filepath", "image_path", "file_name", "image_name", "image_id",
                "img", "id")
LABEL_COLUMNS = ("label", "class", "target", "category", "y", "diagnosis", "dx", "choice")  # dx: HAM10000; choice:
# Label Studio's CSV export names the column by its Choices control (the image template's "choice")
HEADER_NAMES = (*PATH_COLUMNS, *LABEL_COLUMNS, "labels", "tags", SPLIT_COLUMN)  # a first line naming one is a header
SMALL_VAL = 50  # a given validation split of fewer items, and under 5% of the training items, is too small to choose by
MAX_PIXELS = 89_478_485  # data.max_pixels' default: PIL's own decompression-bomb limit (about 9459 x 9459)


@dataclass
class Sample:
    """One image file and its class index (None when unlabelled).

    ``data``: the file's bytes when the image is held in memory (an upload), or where they are stored (a row of a
    dataset's Arrow file: ``stored.Stored``), not read from ``path``; ``path`` then only names it and must be unique
    among the samples read together.
    """

    path: Path
    label: int | None = None
    key: str = ""  # sha1 of the file's bytes, filled when the file is read
    data: bytes | Stored | None = None
    group: str = ""  # the item's group (a table's patient / lesion column): a group stays on one side of a split

    @property
    def source(self) -> Path | bytes:
        """What ``transforms.decode`` reads: the bytes in memory, else the file."""
        return self.path if self.data is None else payload(self.data)


ImageSplits = Splits  # classes, train, val, test, layout, skipped, notes


def _subfolders(root: Path) -> list[Path]:
    """The folders in ``root`` that may hold data: not hidden, not a zip's ``__MACOSX``."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")


MASK_FOLDERS = ("masks", "mask", "Masks")  # beside a class folder's images/: segmentation masks, not its images
# beside one folder of images: what annotates them (the Oxford-IIIT Pets' annotations/trimaps/, Stanford Dogs' Annotation/)
ANNOTATION_FOLDERS = ("annotations", "annotation", "masks", "trimaps", "xmls", "segmentations", "groundtruth",
                      "ground_truth")


def _class_images(folder: Path) -> Path:
    """Where a class folder's images are: the folder, or its ``images/`` when ``masks/`` is beside it (the COVID-19
    Radiography Database: ``COVID/images/``, ``COVID/masks/``)."""
    if (folder / "images").is_dir() and any((folder / m).is_dir() for m in MASK_FOLDERS):
        return folder / "images"
    return folder


# beside class folders, images of no class: Caltech-101's and Caltech-256's clutter, left out as torchvision's
# Caltech101 and the datasets' evaluation protocols leave it
CLUTTER_FOLDERS = ("background_google", "257.clutter")


def _class_folders(root: Path, masks: list[Path] | None = None) -> dict[str, list[Path]]:
    """``{class name: image paths}`` of a folder of class subfolders (``_class_images``), or of a folder of images named
    by their class (``named_classes``) when it has no subfolders. Masks beside their images (BUSI's
    ``benign (1)_mask.png``: ``segmentation.split_masks``) are no images: left out, and added to ``masks``."""
    folders = {f.name: _without_masks(sorted(p for p in _class_images(f).rglob("*") if is_image_file(p)), masks)
               for f in _subfolders(root) if f.name.lower() not in (*UNLABELLED_FOLDERS, *CLUTTER_FOLDERS)}
    if folders:
        return folders
    return named_classes(_without_masks(sorted(p for p in root.iterdir() if is_image_file(p)), masks)) or {}


def _without_masks(files: list[Path], masks: list[Path] | None) -> list[Path]:
    images, found = split_masks(files)
    if masks is not None:
        masks.extend(m for image in images for m in found.get(image, []))
    return images


_NAMED = re.compile(r"(?P<label>.+?)[\s._-]*(?:\(\d+\)|\d+)")  # cat.0, american_bulldog_10, dog (3), img001


def named_classes(files: Sequence[Path]) -> dict[str, list[Path]] | None:
    """``{class: files}`` of images named ``CLASS<separator>NUMBER`` (Kaggle's Dogs vs. Cats ``cat.0.jpg``, the
    Oxford-IIIT Pets ``american_bulldog_10.jpg``), or None unless every name is one and they make at least 2
    classes of at least 2 images, fewer classes than half the images (camera names like ``IMG_0001`` are one class)."""
    found: dict[str, list[Path]] = {}
    for f in files:
        label = _class_in_name(f.stem)
        if label is None:
            return None
        found.setdefault(label, []).append(f)
    if len(found) < 2 or len(found) > len(files) / 2 or min(map(len, found.values())) < 2:
        return None
    return found


def _class_in_name(stem: str) -> str | None:
    """``cat`` of ``cat.0``, ``american_bulldog`` of ``american_bulldog_10``; None without a number or a letter."""
    m = _NAMED.fullmatch(stem)
    label = m.group("label").strip(" ._-") if m else ""
    return label if re.search(r"[^\W\d_]", label) else None


def _masks_note(masks: list[Path]) -> str:
    """What the layout line says of the masks beside the training images (``_class_folders``), if any."""
    if not masks:
        return ""
    return (f" ({len(masks)} mask(s) beside their images, e.g. {masks[0].name}: not read; --task segmentation "
            "trains on them)")


def _layout_of(root: Path) -> str:
    """'class folders', or how the classes were read from the file names of a folder without subfolders."""
    folders = _subfolders(root)
    if folders:
        masked = any(_class_images(f) != f for f in folders)
        unlabelled = [f.name for f in folders if f.name.lower() in UNLABELLED_FOLDERS]
        clutter = [f.name for f in folders if f.name.lower() in CLUTTER_FOLDERS]
        return ("class folders" + (" (each one's images/; masks/ beside them not read)" if masked else "")
                + (f" ({unlabelled[0]}/: images without a class, not read)" if unlabelled else "")
                + (f" ({clutter[0]}/: clutter images of no class, left out as Caltech's protocol does)"
                   if clutter else ""))
    example = next(p for p in sorted(root.iterdir()) if is_image_file(p))
    return f"images named by class ({example.name}: '{_class_in_name(example.stem)}')"


def _unwrap(root: Path) -> Path:
    """The folder that holds the data: ``root``, or the one folder inside it when it holds nothing else (an archive
    unpacked into a folder of its own name: ``chest_xray/chest_xray/train/...``), or nothing else but folders of
    other files (Food-101's ``images/`` beside ``meta/*.txt``, CUB-200's beside ``attributes/``) or of annotations
    (``ANNOTATION_FOLDERS``: the Oxford-IIIT Pets' ``images/`` of ``american_bulldog_10.jpg``... beside
    ``annotations/trimaps/``)."""
    while True:  # one folder of class folders is one class: never data, so going in loses nothing
        folders = _subfolders(root)
        inner = [f for f in folders if not _only_other_files(f) and f.name.lower() not in ANNOTATION_FOLDERS]
        named = (len(inner) == 1 and 1 < len(folders) == 1 + sum(f.name.lower() in ANNOTATION_FOLDERS for f in folders)
                 and named_classes(sorted(p for p in inner[0].iterdir() if is_image_file(p))) is not None)
        if len(inner) != 1 or not (_subfolders(inner[0]) or named) or any(is_image_file(p) for p in root.iterdir()):
            return root
        root = inner[0]


def _only_other_files(folder: Path) -> bool:
    """Whether a folder holds files, none of them an image (a dataset's ``meta/`` of lists; not an empty class)."""
    files = False
    for p in folder.rglob("*"):
        if is_image_file(p):
            return False
        files = files or p.is_file()
    return files


def _check_classes(found: dict[str, list[Path]], root: Path) -> None:
    if not found:
        loose = [p.name for p in root.iterdir() if is_image_file(p)][:3]
        extra = (f" It holds images directly ({', '.join(loose)}...): put them in one folder per class, or name them "
                 "by class (cat.0.jpg, cat.1.jpg, dog.0.jpg...: at least 2 classes of 2 images)." if loose else "")
        raise DataError(f"No class folders in {root}: expected one subfolder of images per class."
                        f"{extra or not_data_hint(root)}")
    empty = [name for name, files in found.items() if not files]
    if empty:
        raise DataError(
            f"Class folder(s) with no images in {root}: {', '.join(empty)}. Add images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder(s)."
            + not_data_hint(root / empty[0])
        )
    if len(found) < 2:
        raise DataError(f"Only one class ('{next(iter(found))}') in {root}: a classifier needs at least 2 classes.")
    inner = [{f.name for f in _subfolders(root / name)}
             if (root / name).is_dir() and _class_images(root / name) == root / name else set()
             for name in found]  # (root / name: a class folder, not a class of file names, nor images/ + masks/)
    splits = {w for words in SPLIT_WORDS.values() for w in words}
    if len(inner[0]) >= 2 and all(names == inner[0] for names in inner) and not {n.lower() for n in inner[0]} <= splits:
        # PlantVillage's color/, grayscale/ and segmented/, each of the same 38 class folders
        tops = ", ".join(f"{name}/" for name in list(found)[:4])
        some = ", ".join(sorted(inner[0])[:3]) + (", ..." if len(inner[0]) > 3 else "")
        raise DataError(f"{root}: every folder in it ({tops}) holds the same {len(inner[0])} subfolders "
                        f"({some}): they look like versions of one dataset, each with "
                        f"its class folders, not classes. Give one of them as DATA (e.g. {root / next(iter(found))})")


def discover(data: str | Path, val_fraction: float = 0.2, seed: int = 0,
             path_column: str | None = None, label_column: str | None = None,
             group_column: str | None = None, small_val: str = "hold_out") -> ImageSplits:
    """Find the classes and train/val(/test) samples of DATA (files are not read yet). ``group_column``: a table's
    column of groups (patients...) kept on one side of the split (default: found by name; ``none``: no groups).
    ``small_val``: ``hold_out`` replaces a given validation split too small to choose by (``small_given_val``).
    Classes named by numbers or WordNet ids get the names a file beside them gives (``class_names``)."""
    root = Path(data)
    splits = _discover(root, val_fraction, seed, path_column, label_column, group_column, small_val)
    return name_classes(splits, _beside(root))


def _beside(root: Path) -> Iterator[Path]:
    """Where a file naming DATA's classes may be: the table's folder and the one above it, or the folder, the one its
    data is in (``_unwrap``) and the one above it (Udacity's ``cat_to_name.json`` beside ``flower_data/``)."""
    if root.is_file():
        yield from (root.parent, root.parent.parent)
    else:
        yield from (root, _unwrap(root), root.parent)


def _discover(root: Path, val_fraction: float, seed: int, path_column: str | None, label_column: str | None,
              group_column: str | None, small_val: str) -> ImageSplits:
    if not root.exists():
        raise DataError(f"Data not found: {root}")
    if root.is_file():
        if arrays.is_array_data(root):  # MedMNIST's pathmnist.npz, Keras' mnist.npz
            return _from_arrays(root, val_fraction, seed)
        if hf_datasets.is_image_dataset(root):  # a Hub dataset's Parquet file of images
            return _from_datasets(root, label_column, val_fraction, seed)
        pixels = pixel_table(root, label_column)
        if pixels is not None:  # Kaggle's Digit Recognizer train.csv, FER-2013's fer2013.csv
            return _from_pixel_tables(root, [pixels], val_fraction, seed)
        if not is_table_file(root):
            raise DataError(f"{root}: expected a folder of images or a .csv (or Excel .xlsx, JSON Lines .jsonl) file "
                            "with path and label columns." + not_data_hint(root))
        splits = _from_csv(root, val_fraction, seed, path_column, label_column, group_column)
        return small_given_val(splits, val_fraction, seed, "the 'split' column's val rows", small_val,
                               by_path=not no_groups(group_column))
    if hf_datasets.is_image_dataset(root):  # load_dataset("beans").save_to_disk(...)
        return _from_datasets(root, label_column, val_fraction, seed)
    exports = export_splits(root)
    if len(exports) > 1 or exports and exports["train"].is_dir():  # an export per split, a Supervisely project's tags
        return _from_csv(root if len(exports) > 1 else exports["train"], val_fraction, seed, path_column, label_column,
                         group_column)
    if split_tables(root):  # a table in each split folder naming its images (Roboflow's _classes.csv): one table
        return _from_csv(root, val_fraction, seed, path_column, label_column, group_column)
    if arrays.is_array_data(root):  # torchvision's MNIST/raw/ (IDX files), cifar-10-batches-py/
        return _from_arrays(root, val_fraction, seed)
    inner = _unwrap(root)
    given = listed(inner) or (listed(root) if inner != root else None)
    if given is not None:  # labels and splits in files beside one folder of images (Flowers-102, Stanford Cars)
        return _from_listed(given, val_fraction, seed, small_val)
    tables = _label_tables(inner, path_column, label_column)
    if not tables and inner != root:  # ISIC 2020's train.csv beside jpeg/, the one folder of images
        tables = _label_tables(root, path_column, label_column)
    try:
        splits = _from_folders(inner, val_fraction, seed, small_val, not no_groups(group_column))
    except DataError:
        pixels = tables_in(inner)
        if pixels:  # no class folders of images, but Fashion-MNIST's fashion-mnist_train.csv and _test.csv
            return _from_pixel_tables(root, pixels, val_fraction, seed)
        if len(tables) != 1:  # Kaggle's labels.csv beside train/ of ids: the one table that labels the images
            raise
        return _from_folder_table(root, tables[0].path, val_fraction, seed, path_column, label_column, group_column,
                                  small_val)
    covering = [t for t in tables if t.covers]
    if len(covering) == 1 and covering[0].cuts_across(splits):
        # HAM10000's metadata labels every image of the folders HAM10000_images_part_1/ and _part_2/: not classes
        names = ", ".join(splits.classes[:3]) + ("..." if len(splits.classes) > 3 else "")
        read = _from_folder_table(root, covering[0].path, val_fraction, seed, path_column, label_column, group_column,
                                  small_val, f"not the folder names ({names})")
        labelled = {f.name.lower() for f in covering[0].files}
        for folder in _subfolders(inner):  # APTOS' test_images/: what the table does not label, named
            loose = [p for p in folder.rglob("*") if is_image_file(p) and p.name.lower() not in labelled]
            if loose and _in_test_folder(loose[0], inner):
                read.notes.append(f"{folder.name}/ holds {len(loose)} image(s) {covering[0].path.name} does not label: "
                                  f"not used; after training, `headstart predict RUN {folder}` labels them")
        return read
    if inner != root:
        splits.layout = f"{inner.relative_to(root)}/: {splits.layout}"
    return splits


TABLE_SKIP = re.compile(r"submission|^test|prediction")  # Kaggle's sample_submission.csv, test.csv: no labels
TABLE_BYTES = 64 * 2**20  # larger tables in a folder are not looked at (HAM10000's hmnist_28_28_RGB.csv of pixels)
TABLE_COVERS = 0.9  # share of a folder's images (by name) a table must label to be read instead of the folder names


@dataclass
class LabelTable:
    """A table in DATA's folder that labels image files: the existing ones it names, their labels, and whether they
    are nearly all the images under the folder (``TABLE_COVERS``, by file name; a test folder's left out)."""

    path: Path
    files: list[Path]
    labels: list[str]
    covers: bool = False

    def cuts_across(self, splits: ImageSplits) -> bool:
        """Whether the table gives the images of one of the folders read as classes different labels (HAM10000's
        metadata: each image folder holds every diagnosis); a table that only names the folders' classes otherwise
        (ids for names) leaves the folder names the classes."""
        by_name = {f.name.lower(): label for f, label in zip(self.files, self.labels)}
        seen: dict[int, set[str]] = {}
        for s in splits.train + splits.val + splits.test:
            if s.path.name.lower() in by_name:
                seen.setdefault(s.label, set()).add(by_name[s.path.name.lower()])
        return any(len(found) > 1 for found in seen.values())


def _label_tables(folder: Path, path_column: str | None, label_column: str | None) -> list[LabelTable]:
    """The tables (CSV/TSV, not a submission, test or multi-label table) in ``folder`` that label image files, each
    read once; a folder without such a table costs a listing of its entries."""
    from headstart.tasks.multilabel.data import looks_like_multilabel

    found = []
    for table in sorted(folder.iterdir()):
        if (not table.is_file() or not is_table_file(table) or TABLE_SKIP.search(table.stem.lower())
                or table.stat().st_size > TABLE_BYTES or looks_like_multilabel(table)):
            continue
        try:
            rows = read_table(table, [path_column, label_column])
            pcol = _pick_column(rows, path_column, PATH_COLUMNS, "path", table)
            labels, _ = _labels(rows, label_column, table, [pcol])
        except DataError:
            continue
        files, _ = table_files(table, [r[pcol] for r in rows.rows])
        kept = [(f, label) for f, label in zip(files, labels) if label and f.is_file()]
        if len({label for _, label in kept}) >= 2 and len(kept) >= TABLE_COVERS * len(files):
            found.append(LabelTable(table, [f for f, _ in kept], [label for _, label in kept]))
    if found:  # the images under the folder, by name, listed once; not those of a test folder (APTOS' test_images/
        # beside the train_images/ that train.csv labels: unlabelled, as Kaggle gives them)
        names = {p.name.lower() for p in folder.rglob("*") if is_image_file(p) and not _in_test_folder(p, folder)}
        for t in found:
            t.covers = len({f.name.lower() for f in t.files} & names) >= TABLE_COVERS * len(names)
    return found


def _in_test_folder(path: Path, folder: Path) -> bool:
    """Whether ``path`` is under a folder of ``folder`` named as a test split (``test``, ``test_images``)."""
    parts = path.relative_to(folder).parts
    return len(parts) > 1 and any(w in TEST_NAMES for w in re.split(r"[^a-z0-9]+", parts[0].lower()))


def _from_folder_table(root: Path, table: Path, val_fraction: float, seed: int, path_column: str | None,
                       label_column: str | None, group_column: str | None, small_val: str,
                       instead: str = "") -> ImageSplits:
    """DATA's folder read as the table in it that labels its images (``_label_tables``), as said in the layout."""
    splits = discover(table, val_fraction, seed, path_column, label_column, group_column, small_val)
    where = table.relative_to(root).as_posix()
    splits.layout = f"labels from {where}{' (' + instead + ')' if instead else ''}: {splits.layout}"
    return splits


def small_given_val(splits: Splits, val_fraction: float, seed: int, name: str, mode: str = "hold_out",
                    resplit: Callable[[Splits, list[Any]], Any] | None = None, by_path: bool = True) -> Splits:
    """``splits`` whose given validation split is too small to choose epochs and phases by (under ``SMALL_VAL`` items
    and 5% of the training items: Kaggle's chest X-rays, 16 of 5,216) with validation held out of training instead
    (``mode="hold_out"``, by ``resplit(splits, training items)``, default the stratified split of classes); the given
    items become the test split, or, when DATA has one, are left out, as said."""
    n = len(splits.val)
    if mode != "hold_out" or splits.val_held_out or not n or n >= SMALL_VAL or n >= 0.05 * len(splits.train):
        return splits
    given = splits.val
    if resplit is None:
        _split_held_out(splits, list(splits.train), val_fraction, seed, name, by_path)
    else:
        resplit(splits, list(splits.train))
    splits.val_held_out = True
    why = (f"{name} holds {n} item(s) against {len(splits.train) + len(splits.val)} for training: too few to choose "
           f"epochs and phases by (a score moves in steps of {1 / n:.0%}); validation is {val_fraction:.0%} of the "
           "training items instead (data.small_val=keep uses it as it is)")
    if splits.test:
        splits.notes.append(why + f"; {name} is left out, as DATA's test split measures the final model")
    else:
        splits.test = given
        splits.notes.append(why + f"; {name} is scored once at the end, as the test split")
    splits.layout += (f", {val_fraction:.0%} stratified validation split of the training items (seed {seed}) as {name} "
                      f"holds too few ({n})" if resplit is None else f" as {name} holds too few ({n})")
    return splits


def split_of(folder: Path) -> str | None:
    """``train``, ``val`` or ``test`` when a folder's name says it is a split: one of the usual names (``train``,
    ``Training``, ``valid``, ``test1``...), or a name holding one (``seg_train``, ``training_set``) for a folder of
    class folders (after ``_unwrap``), not of images (a class named ``train_station`` stays a class)."""
    words = [w for w in re.split(r"[^a-z0-9]+", folder.name.lower()) if w]
    for split, names in SPLIT_WORDS.items():
        if folder.name.lower() in names:
            return split
        if any(w in names for w in words) and _subfolders(_unwrap(folder)):
            return split
    return None


def _named(folder: Path, root: Path) -> str:
    """A folder as the layout line names it: its path under DATA, with a slash."""
    return f"{folder.relative_to(root).as_posix()}/"


def split_folders(root: Path) -> dict[str, Path]:
    """``{train, val, test: folder}`` of a folder of split folders (each unwrapped: Kaggle's ``training_set/
    training_set/cats``), the first of each; {} when there is no training folder. Without a folder named for
    training, the one other folder that holds the same class folders as the validation or test folder is it
    (TensorFlow's tutorial sets: ``rps/`` beside ``rps-test-set/``, ``horse-or-human/`` beside
    ``validation-horse-or-human/``)."""
    found: dict[str, Path] = {}
    folders = _subfolders(root)
    for folder in folders:
        split = split_of(folder)
        if split is not None and split not in found:
            found[split] = _unwrap(folder)
    if "train" not in found and found:
        named = set(found.values())
        classes = {f.name for f in _subfolders(next(iter(found.values())))}
        others = [_unwrap(f) for f in folders if _unwrap(f) not in named and split_of(f) is None]
        same = [f for f in others if len(classes) >= 2 and {c.name for c in _subfolders(f)} == classes]
        if len(same) == 1 and len(others) == 1:
            found["train"] = same[0]
    return {split: found[split] for split in SPLIT_WORDS if split in found} if "train" in found else {}


def _from_folders(root: Path, val_fraction: float, seed: int, small_val: str = "hold_out",
                  by_path: bool = True) -> ImageSplits:
    """The splits of a folder: train/ and val/ (and test/), or class folders (in train/, a test/ beside);
    ``by_path``: a validation split held out of training keeps the patients the paths name on one side."""
    dirs = split_folders(root)
    splits = _split_layout(root, dirs, val_fraction, seed, small_val, by_path)
    used = {d.relative_to(root).parts[0] for d in dirs.values()}
    other = [p.name for p in _subfolders(root) if dirs and p.name not in used]
    if other:
        splits.notes.append(f"{', '.join(f'{n}/' for n in other)} beside the split folders: not a train, validation or "
                            "test folder, not read")
    classes = [c for d in (list(dirs.values()) or [root]) for c in _subfolders(d)]
    unread = unread_note(classes, IMAGE_EXTENSIONS)  # a phone's videos, cameras' RAW files, documents
    if unread:
        splits.notes.append(unread)
    return splits


def _split_layout(root: Path, dirs: dict[str, Path], val_fraction: float, seed: int, small_val: str,
                  by_path: bool = True) -> ImageSplits:
    """The splits of ``root`` given its split folders ``dirs`` ({} for a folder of classes)."""
    data_root = root
    val_dir, test_dir = dirs.get("val"), dirs.get("test")
    if dirs and val_dir is not None:
        masks: list[Path] = []
        train = _class_folders(dirs["train"], masks)
        _check_classes(train, dirs["train"])
        classes = sorted(train)
        kind = _layout_of(dirs["train"])
        splits = ImageSplits(classes, _samples(train, classes), [],
                             layout=f"{_named(dirs['train'], root)} and {_named(val_dir, root)} folders"
                             + ("" if kind == "class folders" else f" of {kind}") + _masks_note(masks))
        splits.val = _held_out(val_dir, classes, splits)
        if test_dir is not None:
            _given_test(test_dir, splits)
        _check_given_splits(splits)
        return small_given_val(splits, val_fraction, seed, _named(val_dir, root), small_val, by_path=by_path)
    if dirs:
        root = dirs["train"]
    masks: list[Path] = []
    found = _class_folders(root, masks)
    _check_classes(found, root)
    classes = sorted(found)
    samples = _samples(found, classes)
    splits = ImageSplits(classes, [], [], layout=f"{_named(root, data_root) + ' ' if dirs else ''}"
                         f"{_layout_of(root)}{_masks_note(masks)}, {val_fraction:.0%} stratified validation split "
                         f"(seed {seed})", val_held_out=True)
    listed = None if dirs or test_dir is not None else _test_list(root, samples)
    if listed is not None:  # the dataset's own test split: Food-101's meta/test.txt, the Oxford-IIIT Pets' test.txt
        test_list, keep = listed
        splits.test = [s for s, out in zip(samples, keep) if out]
        samples = [s for s, out in zip(samples, keep) if not out]
        splits.layout += f" of the images {test_list} does not list, the {len(splits.test)} it lists the test split"
    _split_held_out(splits, samples, val_fraction, seed, str(root), by_path)
    if test_dir is not None and _given_test(test_dir, splits):
        _check_given_splits(splits)
    return splits


SPLIT_LIST_FOLDERS = ("meta", "annotations", "lists", "splits", "labels")  # where a dataset keeps its split lists
TEST_LISTS = ("test.txt", "test.csv", "test1.txt")  # test1.txt: the first of DTD's ten splits (labels/test1.txt)
LISTED = 0.9  # share of a test list's lines that must name DATA's images


def _test_list(root: Path, samples: Sequence[Sample]) -> tuple[str, list[bool]] | None:
    """``(list, which samples it names)`` of the dataset's own test list: a ``test.txt`` in ``root``, or in a
    ``meta/``, ``annotations/``, ``lists/`` or ``splits/`` folder in it or beside it (Food-101's ``meta/test.txt`` of
    ``apple_pie/1011328``, the Oxford-IIIT Pets' ``annotations/test.txt`` of ``Abyssinian_201 1 1 1``, DTD's
    ``labels/test1.txt`` of ``banded/banded_0002.jpg``), whose lines
    begin with the images' paths under ``root`` or names, with or without a suffix; else CUB-200's numbered split
    (``_id_split``); None when there is none, when it names few of the images, or all of them."""
    places = [root, *(base / name for base in (root, root.parent) for name in SPLIT_LIST_FOLDERS)]
    lists = [folder / name for folder in places for name in TEST_LISTS if (folder / name).is_file()]
    for test_list in lists:
        try:
            lines = [line.replace(",", " ").split() for line in read_text_file(test_list).splitlines()]
        except DataError:
            continue
        names = {line[0] for line in lines if line}
        keys = {Path(n).with_suffix("").as_posix() if Path(n).suffix.lower() in IMAGE_SUFFIXES else n for n in names}
        keep = [s.path.relative_to(root).with_suffix("").as_posix() in keys or s.path.stem in keys for s in samples]
        if names and LISTED * len(names) <= sum(keep) < len(samples) and not _whole_class(samples, keep):
            return test_list.relative_to(root.parent).as_posix(), keep
    return _id_split(root, samples)


def _whole_class(samples: Sequence[Sample], listed: Sequence[bool]) -> bool:
    """Whether a folder's images are all listed: a test list leaves every class images to train on (Kaggle's
    ``test.csv`` of APTOS' ``test_images/`` ids lists no labelled test split, but the images of a folder of its own)."""
    left = {s.label for s, kept in zip(samples, listed) if not kept}
    return any(s.label not in left for s, kept in zip(samples, listed) if kept)


ID_SPLIT = ("images.txt", "train_test_split.txt")  # CUB-200-2011's and NABirds': id -> image path, id -> is_training


def _id_split(root: Path, samples: Sequence[Sample]) -> tuple[str, list[bool]] | None:
    """The test split of a dataset that numbers its images: ``images.txt`` (``1 001.Black_footed_Albatross/x.jpg``:
    id and path under ``root``) beside ``train_test_split.txt`` (``1 0``: id and is_training), in ``root`` or the
    folder above it (CUB-200-2011, NABirds); None as for ``_test_list``."""
    for base in (root, root.parent):
        paths_file, flags_file = (base / name for name in ID_SPLIT)
        if not (paths_file.is_file() and flags_file.is_file()):
            continue
        try:
            paths = dict(line.split(maxsplit=1) for line in read_text_file(paths_file).splitlines()
                         if len(line.split(maxsplit=1)) == 2)
            flags = dict(line.split()[:2] for line in read_text_file(flags_file).splitlines() if len(line.split()) >= 2)
        except DataError:
            continue
        test = {Path(paths[i].strip()).with_suffix("").as_posix() for i, flag in flags.items()
                if flag == "0" and i in paths}
        keep = [s.path.relative_to(root).with_suffix("").as_posix() in test for s in samples]
        if test and LISTED * len(test) <= sum(keep) < len(samples):
            return f"{flags_file.relative_to(root.parent).as_posix()} (is_training 0, ids of {paths_file.name})", keep
    return None


def _given_test(folder: Path, splits: ImageSplits) -> bool:
    """DATA's ``test/`` folder: its class folders become the test split (scored once, after training; True); loose
    images there have no labels, and the notes say how to label them."""
    found = _split_classes(folder, splits.classes)
    if any(found[0].values()):
        splits.test = _held_out(folder, splits.classes, splits, found)
        splits.layout += f", {folder.name}/ for the final test"
        return True
    loose = [p for p in folder.rglob("*") if is_image_file(p)]
    if loose:
        splits.notes.append(f"{folder.name}/ holds {len(loose)} image(s) without labels (no class folders, no class in "
                            f"their names): not used; after training, `headstart predict RUN {folder}` labels them")
    return False


def file_key(path: Path) -> str:
    """The content key of an image file: the sha1 of its bytes ("" when it cannot be read: reported later)."""
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def content_keys(samples: Sequence[Sample]) -> None:
    """Fill each sample's ``key`` with its file's ``file_key``; samples that have one keep it."""
    todo = [s for s in samples if not s.key]  # a key already found is kept (DATA's splits checked after a split)
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:  # device.threads (set before reading)
        for sample, key in zip(todo, pool.map(lambda sample: file_key(sample.path), todo)):
            sample.key = key


def _duplicate_note(samples: Sequence[Sample], classes: list[str]) -> list[str]:
    """Exact duplicates (same bytes) among ``samples``: how many, an example, and those under two classes."""
    groups = []
    for group in duplicate_groups([s.key for s in samples]):
        distinct = list({str(samples[i].path): i for i in group}.values())  # a file listed twice is a repeated row
        if len(distinct) > 1:
            groups.append(distinct)
    if not groups:
        return []
    extra = sum(len(g) - 1 for g in groups)
    first = groups[0]
    notes = [f"{extra} exact-duplicate file(s) (same content as another file; {len(groups)} group(s), e.g. "
             f"{samples[first[0]].path} = {samples[first[1]].path}): each group is kept on one side of the split"]
    mixed = [g for g in groups if len({samples[i].label for i in g}) > 1]
    if mixed:
        g = mixed[0]
        notes.append(f"{len(mixed)} group(s) of identical files carry different labels, e.g. "
                     + ", ".join(f"{samples[i].path} ({classes[samples[i].label]})" for i in g[:2])
                     + ": check the labels")
    return notes


def _split_held_out(splits: ImageSplits, samples: list[Sample], val_fraction: float, seed: int, where: str,
                    by_path: bool = True) -> None:
    """The seeded stratified split, with exact duplicates kept together and classes too small for it named; without
    a table's groups, ``by_path`` keeps the patients the paths name together (``core.splits.group_by_path``)."""
    note = (_track_groups(samples) or group_by_path(samples, [s.label for s in samples])) if by_path else ""
    splits.layout += f", {note}" if note else ""
    content_keys(samples)
    labels = [s.label for s in samples]
    keys = merged_units([s.key for s in samples], [s.group for s in samples])  # duplicates and groups stay together
    units = set(keys)
    if len(units) == len(samples) and len(set(labels)) == len(samples):
        raise DataError(f"{where}: every class has a single image ({len(samples)} classes, {len(samples)} images): "
                        "a validation split needs at least 2 images of a class. Add images, or give a val/ folder "
                        "(or a 'split' column)")
    train_idx, val_idx = stratified_split(labels, val_fraction, seed, groups=keys)
    if not val_idx:
        raise DataError(f"{where}: no class has 2 different images ({len(samples)} images, {len(set(keys))} distinct "
                        "files or groups): a validation split needs at least 2 of a class. Add images, or give a val/ "
                        "folder")
    splits.train, splits.val = [samples[i] for i in train_idx], [samples[i] for i in val_idx]
    splits.notes += _duplicate_note(samples, splits.classes)
    splits.notes += split_notes(labels, [labels[i] for i in val_idx], splits.classes, "images")


GTSRB_FRAME = re.compile(r"(\d{5})_(\d{5})_\d{5}\.\w+")  # Kaggle's GTSRB: Train/0/00000_00003_00012.png


def _track_groups(samples: list[Sample]) -> str:
    """GTSRB's frames (``class_track_frame`` file names, as Kaggle's GTSRB names its training images): each track, some
    thirty photos of one sign as a car passed it, becomes a group, kept on one side of the split; the layout note ('',
    no groups, when the names are not GTSRB's, or when a class would be a single track)."""
    if not samples or any(s.group for s in samples):
        return ""
    matches = [GTSRB_FRAME.fullmatch(s.path.name) for s in samples]
    if sum(m is not None for m in matches) < 0.9 * len(samples):
        return ""
    tracks = [f"track {m.group(1)}_{m.group(2)}" if m else "" for m in matches]
    per_class: dict[Any, set[str]] = {}
    for sample, track in zip(samples, tracks):
        per_class.setdefault(sample.label, set()).add(track or str(sample.path))
    sizes = Counter(s.label for s in samples)
    if any(len(found) < 2 <= sizes[label] for label, found in per_class.items()):
        return ""
    for sample, track in zip(samples, tracks):
        sample.group = track
    return (f"split by GTSRB's tracks (file names class_track_frame): {len(set(tracks) - {''})} tracks, each one's "
            "frames on one side of the split")


def _check_given_splits(splits: ImageSplits, group_by: str | None = None) -> None:
    """DATA's own splits: say loudly how many validation/test files are byte-identical copies of training files, and
    how many groups (``group_by``: patients...) are on both sides."""
    content_keys(splits.train + splits.val + splits.test)
    for name, items in (("validation", splits.val), ("test", splits.test)) if group_by else ():
        both = straddling_groups([s.group for s in splits.train], [s.group for s in items], group_by, name)
        if both:
            splits.notes.append(both)
    train = {s.key: s for s in splits.train if s.key}
    for name, items in (("validation", splits.val), ("test", splits.test)):
        shared = [s for s in items if s.key in train]
        if shared:
            s = shared[0]
            splits.notes.append(
                f"{len(shared)} of the {len(items)} {name} images are byte-identical copies of training images "
                f"(e.g. {s.path} = {train[s.key].path}): the {name} scores are optimistic. Remove the copies from one "
                "side")


def _samples(found: dict[str, list[Path]], classes: list[str]) -> list[Sample]:
    return [Sample(p, classes.index(name)) for name in classes for p in found.get(name, [])]


LIST_SUFFIXES = (".csv", ".tsv", ".txt")  # tables that label a split folder's images (``_listed_classes``)
IMAGE_FOLDERS = ("images", "imgs", "img")  # a split folder's one folder of unlabelled images (Tiny ImageNet's test/)


def _listed_classes(folder: Path, classes: Sequence[str]) -> tuple[dict[str, list[Path]], str] | None:
    """``({class: images}, table)`` of a split folder without class folders whose images a table labels: a table in it
    (Tiny ImageNet's ``val/val_annotations.txt``: file, class, box; its images in ``val/images/``) or beside it, named
    after it (GTSRB's ``Test.csv``: ``...,ClassId,Path``, beside ``Test/``). The label column is the one holding only
    training's ``classes`` (of several, the one of most distinct values: not a box coordinate), the path column the
    one of image file names; the table must find most of its images. None when no table does."""
    tables = sorted(p for p in folder.iterdir() if p.suffix.lower() in LIST_SUFFIXES and p.is_file())
    tables += [p for p in folder.parent.iterdir() if p.is_file() and p.stem.lower() == folder.name.lower()
               and p.suffix.lower() in LIST_SUFFIXES]
    known = set(classes)
    for table in tables:
        try:
            rows = read_table(table)
        except DataError:
            continue
        values = {c: [str(r.get(c) or "").strip() for r in rows.rows] for c in rows.columns}
        labels = [c for c, vs in values.items() if any(vs) and set(vs) - {""} <= known]
        path = by_content("path", rows.columns, rows.rows)  # the one column of image file names
        if not labels or path is None:
            continue
        label = max(labels, key=lambda c: len(set(values[c])))
        files, _ = table_files(table, values[path])
        found: dict[str, list[Path]] = {c: [] for c in classes}
        for file, name in zip(files, values[label]):
            if name and file.is_file() and is_image_file(file):
                found[name].append(file)
        if 2 * sum(map(len, found.values())) > len(files):
            return found, table.relative_to(folder.parent).as_posix()
    return None


def _split_classes(folder: Path, classes: Sequence[str]) -> tuple[dict[str, list[Path]], str]:
    """``({class: images}, table)`` of a given validation or test folder: its class folders (a lone ``images/`` of
    unlabelled images is none), else, where those are none or not training's, a table's labels (``_listed_classes``;
    ``table`` names it, else '')."""
    found = _class_folders(folder)
    if set(found) <= set(IMAGE_FOLDERS) - set(classes):  # Tiny ImageNet's test/images/: not a class
        found = {}
    if not any(found.values()) or any(v and k not in classes for k, v in found.items()):
        listed = _listed_classes(folder, classes)
        if listed is not None:
            return listed
    return found, ""


def _held_out(folder: Path, classes: list[str], splits: ImageSplits,
              split: tuple[dict[str, list[Path]], str] | None = None) -> list[Sample]:
    """The samples of a given validation or test folder (``split``: its ``_split_classes`` when already found)."""
    found, table = split or _split_classes(folder, classes)
    if table:
        splits.notes.append(f"{folder.name}/: {sum(map(len, found.values()))} image(s) labelled by {table}")
    found = _matched(found, classes, folder, splits)
    unknown = {k: len(v) for k, v in found.items() if k not in classes and v}
    if unknown:
        raise DataError(
            f"{folder} has classes that train/ does not: {unknown}. Known classes: {', '.join(classes)}"
        )
    missing = [c for c in classes if not found.get(c)]
    if missing:
        splits.notes.append(f"{folder.name}/ has no images of: {', '.join(missing)}")
    return _samples(found, classes)


def _matched(found: dict[str, list[Path]], classes: Sequence[str], folder: Path,
             splits: ImageSplits) -> dict[str, list[Path]]:
    """``found`` with the class folders that training's names but for case, spacing or separators (``val/ants``
    for ``train/Ants``, ``val/Bees `` for ``train/bees``) given training's names, and a note saying so."""
    match = folded_class(classes)
    renamed = {name: match(name) for name, files in found.items() if name not in classes and files and match(name)}
    if not renamed:
        return found
    out: dict[str, list[Path]] = {}
    for name, files in found.items():
        out.setdefault(renamed.get(name, name), []).extend(files)
    said = ", ".join(f"'{a}' → '{b}'" for a, b in list(renamed.items())[:5]) + (", ..." if len(renamed) > 5 else "")
    splits.notes.append(f"{folder.name}/: {len(renamed)} class folder(s) named as training's but for case, spacing or "
                        f"separators were read as training's classes: {said}")
    return out


def _names_files(table: Path, rows: Sequence[dict[str, Any]], column: str | None) -> bool:
    """Whether ``column`` of a table's rows names image files (paths, or file names or ids beside the table)."""
    values = [str(r.get(column) or "").strip() for r in rows[:50]] if column else []
    files = table_files(table, values)[0] if any(values) else []
    return bool(files) and 2 * sum(f.is_file() for f in files) >= len(files)


def _from_csv(path: Path, val_fraction: float, seed: int, path_column: str | None,
              label_column: str | None, group_by: str | None = None) -> ImageSplits:
    table = read_table(path, [path_column, label_column])
    rows = table.rows
    gcol = group_column(table.columns, group_by, [path_column or "", label_column or ""], path)
    try:
        pcol = _pick_column(table, path_column, PATH_COLUMNS, "path", path, exclude=[gcol] if gcol else [])
    except DataError:
        if not gcol or path_column is not None:
            raise
        pcol = None
    if gcol and path_column is None and not _names_files(path, rows, pcol) and _names_files(path, rows, gcol):
        pcol = gcol  # RSNA's patientId: the patient, and the name of its image file
    if pcol is None:
        pcol = _pick_column(table, path_column, PATH_COLUMNS, "path", path)  # the error naming the columns
    labels, lcol = _labels(table, label_column, path, [pcol, *([gcol] if gcol and gcol != pcol else [])])
    classes = sorted(set(labels) - {""})
    if len(classes) < 2:
        raise DataError(f"{path}: {lcol} has {len(classes)} distinct label(s) {classes}; need at least 2")
    samples, split_names = [], []
    files, found_as = table_files(path, [r[pcol] for r in rows])
    notes = "; ".join(n for n in (found_as, table.describe()) if n)
    splits = ImageSplits(classes, [], [], layout=f"{table_kind(path)} {path.name} (path column '{pcol}', {lcol}"
                         f"{'; ' + notes if notes else ''})")
    seen_rows: Counter = Counter()
    read: set[tuple[Path, str]] = set()
    again = 0  # rows repeating an earlier row's file and label (RSNA's table: a row per box): read once
    for line, (row, file, label) in enumerate(zip(rows, files, labels), start=table.first_line):
        if not label:
            splits.skipped.append((f"{path.name}:{line}", "empty label"))
            continue
        if (file, label) in read:
            again += 1
            continue
        read.add((file, label))
        samples.append(Sample(file, classes.index(label), group=str(row[gcol] or "").strip() if gcol else ""))
        split_names.append(str(row.get("split", "")).strip().lower())
        seen_rows[str(samples[-1].path)] += 1
    if again:
        splits.notes.append(f"{path.name}: {again} row(s) repeat an earlier row's file and label (a row per box or "
                            "finding): each image read once")
    repeated = {p: n for p, n in seen_rows.items() if n > 1}
    if repeated:
        example = next(iter(repeated))
        splits.notes.append(f"{path.name}: {sum(repeated.values()) - len(repeated)} duplicate row(s) (a file listed "
                            f"more than once, e.g. {example} x{repeated[example]}): the copies stay on one side of the "
                            "split")
    if any(split_names):
        for sample, split in zip(samples, split_names):
            target = {"val": splits.val, "valid": splits.val, "validation": splits.val, "test": splits.test}
            target.get(split, splits.train).append(sample)
        splits.layout += ", 'split' column"
        if not splits.val:  # train (and test) rows only, as Hugging Face's imagefolder gives train/metadata.jsonl
            if not splits.train:
                raise DataError(f"{path}: the 'split' column has no train rows (values: "
                                f"{sorted(set(split_names))[:5]})")
            splits.layout += f" (no val rows: {val_fraction:.0%} of its train rows held out, stratified, seed {seed})"
            splits.val_held_out = True
            _split_held_out(splits, list(splits.train), val_fraction, seed, str(path), not no_groups(group_by))
        _check_given_splits(splits, gcol)
        return splits
    splits.layout += f", {val_fraction:.0%} stratified validation split (seed {seed})"
    if gcol:
        splits.layout += f", {group_note([s.group for s in samples], gcol, 'images')}"
    splits.val_held_out = True
    _split_held_out(splits, samples, val_fraction, seed, str(path), not no_groups(group_by))
    return splits


def _from_listed(given: Listed, val_fraction: float, seed: int, small_val: str) -> ImageSplits:
    """The splits of a set whose labels and splits are files (``listed``); a listed image that is missing is
    skipped, named; without a validation split one is held out of training."""
    classes = given.classes
    splits = ImageSplits(classes, [], [], layout=given.layout)
    for split, pairs in given.splits.items():
        kept = []
        for path, label in pairs:
            if path.is_file():
                kept.append(Sample(path, classes.index(label), group=given.groups.get(path, "")))
            else:
                splits.skipped.append((str(path), "listed, but not found"))
        setattr(splits, split, kept)
    if not splits.train:
        raise DataError(f"{given.layout}: none of the {len(given.splits.get('train', []))} training images it lists "
                        "was found")
    if splits.val:
        _check_given_splits(splits)
        return small_given_val(splits, val_fraction, seed, "the listed validation split", small_val)
    splits.layout += f", {val_fraction:.0%} stratified validation split (seed {seed})"
    splits.val_held_out = True
    _split_held_out(splits, list(splits.train), val_fraction, seed, given.layout, False)
    if splits.test:
        _check_given_splits(splits)
    return splits


def _holds_class_images(root: Path, limit: int = 200) -> bool:
    """Whether a folder of ``root`` holds an image among its first ``limit`` entries (class folders: not a folder of
    tables of pixels), without listing whole class folders."""
    return any(is_image_file(p) for f in _subfolders(root) for p in itertools.islice(f.iterdir(), limit))


def _class_order(labels: Collection[str]) -> list[str]:
    """Labels sorted, numbers by value (Sign Language MNIST's 0...24: 2 before 10)."""
    return sorted(labels, key=lambda c: (0, int(c), "") if c.isdigit() else (1, 0, c))


def _pixel_sample(row: PixelRow, classes: Sequence[str] = ()) -> Sample:
    """The sample of an image in memory, labelled by its index in ``classes`` (none given: unlabelled)."""
    label = classes.index(row.label) if classes and row.label is not None else None
    return Sample(row.name, label, key=row.key, data=row.data)


def _labelled_tables(tables: list[PixelTable], root: Path) -> tuple[dict[str, PixelTable], list[str]]:
    """``{split: table}`` of a folder's tables of pixels (train / val / test by name; one table: ``train``) and notes
    on those left out (unlabelled: Kaggle's ``test.csv``)."""
    labelled = [t for t in tables if t.label is not None]
    notes = [f"{t.path.relative_to(root) if t.path.is_relative_to(root) else t.path.name}: images without labels, "
             "not read (predict RUN on it classifies them)" for t in tables if t.label is None]
    if len(labelled) == 1:
        return {"train": labelled[0]}, notes
    by_split: dict[str, PixelTable] = {}
    for table in labelled:
        split = split_of_name(table.path)
        if split is None or split in by_split:
            names = ", ".join(t.path.name for t in labelled)
            raise DataError(f"{root} holds several tables of pixels ({names}) that are not one train and one test "
                            "(or val) table by their names: give the one to train on")
        by_split[split] = table
    if "train" not in by_split:
        raise DataError(f"{root}: no table of pixels named as the training one among "
                        f"{', '.join(t.path.name for t in labelled) or 'none labelled'}")
    return by_split, notes


def _from_pixel_tables(root: Path, tables: list[PixelTable], val_fraction: float, seed: int) -> ImageSplits:
    """Splits of images held as rows of pixel values (``pixel_tables``): a table's split column, or tables named
    train / val / test, else a held-out validation split."""
    if len(tables) == 1 and tables[0].label is None:
        raise DataError(f"{tables[0].path}: a table of pixels without a label column (found "
                        f"{', '.join(repr(c) for c in tables[0].columns[:3])}...): nothing to train on. Predict it with "
                        "a trained run (headstart predict RUN TABLE), or give the table with the labels")
    by_split, notes = _labelled_tables(tables, root if root.is_dir() else root.parent)
    skipped: list[tuple[str, str]] = []
    rows = {split: read_rows(table, skipped) for split, table in by_split.items()}
    if len(rows) == 1 and {r.split for r in rows["train"]} - {""}:  # FER-2013's Usage column
        rows = {split: [r for r in rows["train"] if r.split == split] for split in ("train", "val", "test")}
    layout = "; ".join(t.describe() for t in by_split.values())
    return _from_rows(by_split["train"].path, rows, layout, val_fraction, seed, skipped=skipped, notes=notes)


def _from_rows(where: Path, rows: dict[str, list[PixelRow]], layout: str, val_fraction: float, seed: int,
               classes: list[str] | None = None, skipped: list[tuple[str, str]] | None = None,
               notes: list[str] | None = None) -> ImageSplits:
    """Splits of images in memory (a table of pixels' rows, a datasets folder's images) by split: rows without a
    label skipped (a split of none: left out, said), a validation split held out of training unless given."""
    skipped, notes = list(skipped or []), list(notes or [])
    for split in [s for s in rows if s != "train"]:
        if rows[split] and not any(r.label for r in rows[split]):
            notes.append(f"the {split} split ({len(rows[split])} images) has no labels: not read")
            rows[split] = []
    skipped += [(r.name.name, "empty label") for split_rows in rows.values() for r in split_rows if not r.label]
    rows = {split: [r for r in split_rows if r.label] for split, split_rows in rows.items()}
    used = {r.label for split_rows in rows.values() for r in split_rows}
    classes = [c for c in classes if c in used] + sorted(used - set(classes)) if classes else \
        _class_order({r.label for r in rows.get("train", [])})
    if len(classes) < 2:
        raise DataError(f"{where}: {len(classes)} distinct label(s) {classes}; need at least 2")
    unknown = Counter(r.label for split in ("val", "test") for r in rows.get(split, []) if r.label not in classes)
    if unknown:
        raise DataError(f"{where}: labels the training split does not have: {dict(unknown)}. Known: "
                        f"{', '.join(classes)}")
    splits = ImageSplits(classes, [], [], layout=layout, skipped=skipped, notes=notes)
    splits.test = [_pixel_sample(r, classes) for r in rows.get("test", [])]
    if rows.get("val"):
        splits.train, splits.val = ([_pixel_sample(r, classes) for r in rows[split]] for split in ("train", "val"))
        _check_given_splits(splits)
        return splits
    splits.layout += f", {val_fraction:.0%} stratified validation split (seed {seed})"
    splits.val_held_out = True
    _split_held_out(splits, [_pixel_sample(r, classes) for r in rows["train"]], val_fraction, seed, str(where), False)
    if splits.test:
        _check_given_splits(splits)
    return splits


def _from_arrays(root: Path, val_fraction: float, seed: int) -> ImageSplits:
    """Splits of images stored as arrays (``arrays``: a .npz file, IDX files, CIFAR batches)."""
    found = arrays.read(root)
    splits = _from_rows(root, found.rows, found.layout, val_fraction, seed, found.classes)
    splits.unmirrored = found.unmirrored
    return splits


def _from_datasets(root: Path, label_column: str | None, val_fraction: float, seed: int) -> ImageSplits:
    """Splits of a Hugging Face datasets folder of images (``hf_datasets``), its ClassLabel names the classes."""
    found = hf_datasets.read(root, label_column)
    return _from_rows(root, found.rows, found.layout, val_fraction, seed, found.classes, found.skipped, found.notes)


def table_images(path: Path) -> list[Path]:
    """The image files a table lists (Kaggle's ``test.csv`` of ids: ``train/<id>.jpg``-style names resolved by
    ``table_files``), in its order, to predict; a DataError names the files that are missing."""
    table = as_table(path, every=True) if is_export(path) else read_table(path)  # every task, labelled or not
    column = _pick_column(table, None, PATH_COLUMNS, "path", path)
    files, _ = table_files(path, [r[column] for r in table.rows])
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} of the {len(files)} files its column '{column}' names do not exist, "
                        f"e.g. {missing[:3]}")
    return files


def read_table(path: Path, names: Collection[str | None] = ()) -> Table:
    """The rows of a CSV/TSV file of image paths (delimiter sniffed; a first line that is data: ``tables``).

    ``names``: column names the user gave, which mark the first line as a header like the usual ones do.
    """
    return read_delimited(path, [*HEADER_NAMES, *(n for n in names if n)])


def _pick_column(table: Table, wanted: str | None, candidates: Sequence[str], what: str, path: Path,
                 exclude: Sequence[str] = ()) -> str:
    option = "--label-column (data.label_column)" if what == "label" else f"data.{what}_column"
    hint = f"Name it one of {list(candidates)} or give it with {option}"
    guess = what == "path" or not table.header  # labels by their values only without names (``pick_column``)
    return pick_column(table.columns, wanted, candidates, what, path, hint, exclude=exclude, rows=table.rows,
                       by_values=guess)


def _labels(table: Table, wanted: str | None, path: Path, exclude: Sequence[str]) -> tuple[list[str], str]:
    """Each row's label and what they were read from: the label column (``_pick_column``), or, where no column is
    one, one-hot columns (``columns.one_hot_columns``: the name of the row's 1 is its label)."""
    try:
        lcol = _pick_column(table, wanted, LABEL_COLUMNS, "label", path, exclude=exclude)
    except DataError:
        onehot = one_hot_columns(table.columns, table.rows, [*exclude, SPLIT_COLUMN]) if wanted is None else []
        if not onehot:
            raise
        labels = [next(c for c in onehot if str(r[c]).strip() in ("1", "1.0")) for r in table.rows]
        unused = [c for c in onehot if c not in labels]
        return labels, (f"one-hot label columns {', '.join(onehot)}"
                        + (f"; {', '.join(unused)} hold(s) no 1: not a class" if unused else ""))
    labels, merged = one_spelling([str(r[lcol]).strip() for r in table.rows])
    return labels, f"label column '{lcol}'" + (f"; {merged}" if merged else "")


def labelled_samples(data: str | Path, classes: list[str], path_column: str | None = None,
                     label_column: str | None = None, aliases: dict[str, str] | None = None,
                     known_by: str = "the model") -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples of labelled evaluation data, labelled with the model's ``classes``.

    DATA: a folder of class subfolders (the images of its own test list when it has one: Food-101's meta/test.txt,
    CUB-200's train_test_split.txt), a train/val/test folder (test/ then val/ is used) or a CSV (rows with an empty
    label are skipped, each named). ``aliases``: the codes that named training's classes in its data (``class_names``:
    a ``valid/21/`` folder is the class ``fire lily``). ``known_by``: whose classes they are, as messages say it.
    """
    aliases = aliases or {}
    named = classes
    classes = [*named, *(code for code in aliases if code not in named)]  # what DATA's labels may be
    pairs, skipped = _labelled(Path(data), classes, path_column, label_column)
    match = folded_class(named)

    def known(label: str) -> str:  # the model's class; a folder named as it but for case, spacing or separators too
        name = alias(label, named, aliases)
        return name if name in named else match(label) or name

    skipped += [(str(sample.path), "empty label") for sample, label in pairs if not label]
    pairs = [(sample, label) for sample, label in pairs if label]
    unseen = Counter(label for _, label in pairs if known(label) not in named)
    if unseen:
        raise DataError(
            f"{data} has labels {known_by} never saw: {dict(unseen)}. {known_by[0].upper()}{known_by[1:]} knows: "
            f"{', '.join(named)}. Remove or relabel those images, or train on data that includes these classes."
        )
    for sample, label in pairs:
        sample.label = named.index(known(label))
    return [sample for sample, _ in pairs], skipped


def _labelled(root: Path, classes: list[str], path_column: str | None,
              label_column: str | None) -> tuple[list[tuple[Sample, str]], list[tuple[str, str]]]:
    """``labelled_samples``' ``(sample, label)`` pairs of DATA, its labels among ``classes`` where it has their
    folders (a table of pixels: its rows, the test table's of a folder of them)."""
    array_data = arrays.is_array_data(root)
    if array_data or hf_datasets.is_image_dataset(root):  # its test split, else validation
        held_out = ("test", "val")  # (the training images are not read)
        found = None if array_data else hf_datasets.read(root, label_column, held_out)
        by_split = found.rows if found is not None else arrays.read(root, held_out).rows
        rows = next((by_split[s] for s in ("test", "val") if any(r.label for r in by_split.get(s, []))), None)
        if rows is None:
            raise DataError(f"{root} has no labelled test or validation split to evaluate on")
        return [(_pixel_sample(r), r.label) for r in rows if r.label], \
            (found.skipped if found is not None else [])
    given = listed(_unwrap(root)) if root.is_dir() else None
    if given is not None:  # the listed test split (else validation)
        pairs = next((given.splits[s] for s in ("test", "val") if given.splits.get(s)), None)
        if pairs is None:
            raise DataError(f"{root} ({given.layout}) lists no test or validation images to evaluate on")
        return [(Sample(p), label) for p, label in pairs if p.is_file()], \
            [(str(p), "listed, but not found") for p, _ in pairs if not p.is_file()]
    pixels = pixel_table(root, label_column) if root.is_file() else None
    if pixels is None and root.is_dir() and not _holds_class_images(root):
        found = tables_in(root)  # a folder of tables of pixels: its test (else val, else only) table
        tables = _labelled_tables(found, root)[0] if found else {}
        pixels = next((tables[s] for s in ("test", "val", "train") if s in tables), None)
        if pixels is not None and len(found) > 1 and split_of_name(pixels.path) == "train":
            raise DataError(f"{root} holds {pixels.path.name} but no labelled test or val table to evaluate on: give "
                            f"the table to evaluate (e.g. {pixels.path}, the training images)")
    if pixels is not None:
        if pixels.label is None:
            raise DataError(f"{pixels.path}: a table of pixels without labels: nothing to score (predict classifies "
                            "its images)")
        skipped: list[tuple[str, str]] = []
        rows = read_rows(pixels, skipped)
        skipped += [(r.name.name, "empty label") for r in rows if not r.label]
        return [(_pixel_sample(r), r.label) for r in rows if r.label], skipped
    if root.is_dir():
        root = _unwrap(root)
        tables = _label_tables(root, path_column, label_column)
        covering = [t for t in tables if t.covers]
        table = covering[0] if len(covering) == 1 else tables[0] if len(tables) == 1 else None
        # as training read such a folder: a table of the model's classes over nearly all its images, or the table
        # where no folder is a class (a table numbering the class folders leaves them the classes)
        if table is not None and ((table.covers and set(table.labels) <= set(classes))
                                  or not set(_class_folders(root)) & set(classes)):
            return _labelled(table.path, classes, path_column, label_column)
        dirs = split_folders(root)
        found = {}
        for name in ("test", "val"):  # the first labelled one (Kaggle's test1/ holds no labels)
            found = {k: v for k, v in _split_classes(dirs[name], classes)[0].items() if v} if name in dirs else {}
            if found:
                root = dirs[name]
                break
        else:
            if dirs:
                raise DataError(f"{root} holds {_named(dirs['train'], root)} but no labelled test/ or val/ images to "
                                f"evaluate on: give the folder to evaluate (e.g. {dirs['train']}, the training images)")
        if not found:  # one folder of classes: the images of the dataset's own test list, as training's test split
            found = {k: v for k, v in _split_classes(root, classes)[0].items() if v}
            every = [p for v in found.values() for p in v]
            test_list = _test_list(root, [Sample(p) for p in every]) if not dirs else None
            if test_list is not None:
                test = {p for p, out in zip(every, test_list[1]) if out}
                found = {k: [p for p in v if p in test] for k, v in found.items() if any(p in test for p in v)}
        if not found:
            raise DataError(f"No labelled images in {root}: expected one subfolder of images per class")
        pairs = [(Sample(p), k) for k, v in found.items() for p in v]
        skipped = []
    elif root.is_file():
        table = read_table(root, [path_column, label_column])
        # the columns named at training where this table has them, else found as training finds them
        path_column, label_column = (c if c in table.columns else None for c in (path_column, label_column))
        pcol = _pick_column(table, path_column, PATH_COLUMNS, "path", root)
        labels, _ = _labels(table, label_column, root, [pcol])
        files, _ = table_files(root, [r[pcol] for r in table.rows])
        pairs = [(Sample(f), label) for f, label in zip(files, labels)]
        skipped = []
    else:
        raise DataError(f"Data not found: {root}")
    return pairs, skipped


def image_samples(inputs: str | Path | bytes | Sequence[str | Path | bytes | tuple[str, bytes | Stored]]
                  ) -> list[Sample]:
    """Unlabelled samples of image files, folders (searched recursively) and images in memory.

    An image in memory is the bytes of an image file, alone (named ``<memory i>``, i its place in
    ``inputs``) or as ``(name, bytes)`` (or ``(name, Stored)``: a dataset row's); it is decoded exactly as the same
    file on disk would be. A PIL image, a NumPy array or a torch tensor of pixels is such a file's bytes
    (``decode.in_memory``).
    """
    items = predict_items(inputs)
    samples: list[Sample] = []
    for i, item in enumerate(items):
        data = item if isinstance(item, bytes) else in_memory(item)
        if data is not None:
            samples.append(Sample(Path(MEMORY_NAME.format(i)), data=data))
        elif isinstance(item, tuple):
            name, data = item
            samples.append(Sample(Path(name), data=data if isinstance(data, Stored) else bytes(data)))
        else:  # files, folders' files, and the rows of a table of pixels (Kaggle's Digit Recognizer test.csv)
            samples += [Sample(Path(x[0]), data=x[1]) if isinstance(x, tuple) else Sample(x)
                        for x in prediction_items([item])]
    names = Counter(s.path for s in samples if s.data is not None)
    twice = [str(n) for n, k in names.items() if k > 1]
    if twice:
        raise DataError(f"Images in memory need distinct names; found {twice[:3]} more than once")
    return samples


