"""Semantic segmentation. This module imports no torch: ``infer_task`` reads ``paired_folders`` from here."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from headstart.tasks.tables import IMAGE_SUFFIXES, SPLIT_FOLDERS

MASK_FOLDER_SUFFIXES = ("_labels", "_masks", "_mask", "annot", "_annot")  # train/ + train_labels/, trainannot/...
MASK_STEM_SUFFIXES = ("", "_L", "_mask", "_label", "_labels", "_segmentation", "_Segmentation")  # x.png, x_L.png...
MASK_WORDS = ("mask", "groundtruth", "ground_truth", "label", "annot", "segmentation")  # a masks folder's name holds one
SPLIT_FOLDER_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# a mask beside its image, named for it: LGG's x_mask.tif, BUSI's 'benign (1)_mask.png' and its second '_mask_1.png'
MASK_NAME = re.compile(r"(?P<image>.+?)[_\- ](?:mask|segmentation)(?:[_\- ]?\d+)?", re.IGNORECASE)
BESIDE_SHARE = 0.9  # share of the images with a mask beside them for a folder to be one of image-mask pairs
BESIDE_LOOKED_AT = 2000  # image files looked at to tell (the first, walking the folders in order)
CASE_FOLDERS = 20  # more folders of image-mask pairs than this are cases (LGG's patients), not classes (BUSI's 3)


def split_masks(files: Sequence[Path]) -> tuple[list[Path], dict[Path, list[Path]]]:
    """``(images, {image: its masks})`` of image files of which some are masks of others: in the same folder, named
    as the image and ``_mask`` (``MASK_NAME``: LGG's ``TCGA_CS_4941_19960909_1_mask.tif``; BUSI's ``benign (1)_mask.png``
    and ``benign (1)_mask_1.png``, a second lesion's), ``-mask`` or ``_segmentation``."""
    by_stem = {(f.parent, f.stem.lower()): f for f in files}
    masks: dict[Path, list[Path]] = {}
    for f in files:
        m = MASK_NAME.fullmatch(f.stem)
        image = by_stem.get((f.parent, m.group("image").lower())) if m else None
        if image is not None and image != f:
            masks.setdefault(image, []).append(f)
    taken = {m for found in masks.values() for m in found}
    return [f for f in files if f not in taken], {image: sorted(found) for image, found in masks.items()}


def masks_beside(root: Path) -> set[Path] | None:
    """The folders holding images and their masks when nearly every image under ``root`` (``BESIDE_SHARE`` of the
    first ``BESIDE_LOOKED_AT`` image files) has its mask beside it (``split_masks``); else None."""
    if not root.is_dir():
        return None
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        files += [Path(folder) / n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_SUFFIXES
                  and not n.startswith(".")]
        if len(files) >= BESIDE_LOOKED_AT:
            break
    images, masks = split_masks(files)
    if len(masks) < 2 or len(masks) < BESIDE_SHARE * len(images):
        return None
    return {image.parent for image in masks}


def pairs_beside(root: Path) -> bool:
    """Whether ``root`` is a segmentation dataset of masks beside their images (``masks_beside``): in the folder
    itself (or the one folder inside it), in split folders (Roboflow's "Semantic Segmentation Masks" export:
    ``train/``, ``valid/``, ``test/`` of ``x.jpg`` beside ``x_mask.png``), or in more than ``CASE_FOLDERS`` folders of
    one folder (LGG's ``kaggle_3m/`` of patients). Pairs in a few other folders are classes whose images have masks
    (BUSI's ``benign/``, ``malignant/``, ``normal/``): image classification reads them, leaving the masks out."""
    folders = masks_beside(root)
    if not folders:
        return False
    if folders == {inner_folder(root)} or split_named(folders):
        return True
    parents = {f.parent for f in folders}
    return len(parents) == 1 and sum(d.is_dir() for d in next(iter(parents)).iterdir()) > CASE_FOLDERS


def split_named(folders: set[Path]) -> bool:
    """Whether ``folders`` are split folders (``train/`` among them) of one folder."""
    return len({f.parent for f in folders}) == 1 and all(f.name.lower() in SPLIT_FOLDERS for f in folders) and any(
        SPLIT_FOLDERS[f.name.lower()] == "train" for f in folders)


def paired_folders(root: Path) -> dict[str, tuple[Path, Path]]:
    """``{split: (images, masks)}`` of a folder of split folders each beside its masks' folder: Kaggle's CamVid
    (``train/`` + ``train_labels/``, ``val/`` + ``val_labels/``...), the SegNet tutorial's (``train/`` +
    ``trainannot/``); empty unless ``train/`` has one."""
    if not root.is_dir():
        return {}
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    found = {}
    for split, names in SPLIT_FOLDER_NAMES.items():
        for name in names:
            masks = next((subdirs[name + s] for s in MASK_FOLDER_SUFFIXES if name + s in subdirs), None)
            if name in subdirs and masks is not None:
                found[split] = (subdirs[name], masks)
                break
    return found if "train" in found else {}


NOTE_SUFFIXES = (".txt", ".md", ".pdf", ".html", ".rst", ".json")  # files an archive keeps beside its one folder


def inner_folder(root: Path) -> Path:
    """``root``, or the folder inside it when it holds one folder and nothing else but notes (an unpacked archive:
    ``kvasir-seg/Kvasir-SEG/images``; a zip's ``__MACOSX/`` is not counted), looked into up to 3 levels deep."""
    for _ in range(3):
        if not root.is_dir() or (root / "images").is_dir() or (inside := one_folder(root)) is None:
            return root
        root = inside
    return root


def one_folder(root: Path) -> Path | None:
    """The one folder ``root`` holds beside nothing but notes (NOTE_SUFFIXES; a zip's ``__MACOSX/`` not counted),
    else None."""
    entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    folders = [p for p in entries if p.is_dir()]
    if len(folders) != 1 or any(p.is_file() and p.suffix.lower() not in NOTE_SUFFIXES for p in entries):
        return None
    return folders[0]


def _stems(folder: Path, limit: int = 200) -> set[str]:
    """The stems of the image files among the first ``limit`` entries of ``folder`` (not labelImg's .xml boxes)."""
    stems = set()
    for i, p in enumerate(folder.iterdir()):
        if i >= limit:
            break
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            stems.add(p.stem)
    return stems


def named_mask_folder(root: Path, nested: bool = False) -> tuple[Path, Path] | None:
    """``(images, masks)`` of a folder holding two folders, one named for masks (``MASK_WORDS``) whose files carry
    the other's file stems (``MASK_STEM_SUFFIXES``): ISIC 2018's ``ISIC2018_Task1-2_Training_Input/`` and
    ``ISIC2018_Task1_Training_GroundTruth/`` (``ISIC_0000000_segmentation.png``), a lung set's ``CXR_png/`` and
    ``masks/``; None otherwise (two class folders, ``with_mask/`` and ``without_mask/``, share no file stem).
    ``nested``: the masks may be a folder inside the one named for them (the Oxford-IIIT Pets' ``annotations/
    trimaps/``, whose images ``infer_task`` leaves to classification, their names being classes)."""
    if not root.is_dir():
        return None
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(folders) != 2:
        return None
    named = [f for f in folders if any(w in f.name.lower() for w in MASK_WORDS)]
    if len(named) != 1:
        return None
    images = next(f for f in folders if f != named[0])
    image_stems = _stems(images)
    inside = [p for p in named[0].iterdir() if p.is_dir() and not p.name.startswith(".")] if nested else []
    for masks in (named[0], *sorted(inside)):
        mask_stems = _stems(masks)
        matched = sum(any(f"{stem}{tail}" in mask_stems for tail in MASK_STEM_SUFFIXES) for stem in image_stems)
        if image_stems and 2 * matched > len(image_stems):
            return images, masks
    return None


DEEPER_LEVELS = 3  # folders below DATA searched for its one image-mask layout (``deeper_layout``)
DEEPER_LOOKED_AT = 40  # folders looked into at most


def deeper_layout(root: Path) -> Path | None:
    """The one folder below ``root`` (up to ``DEEPER_LEVELS`` down) that holds an image-mask layout (``images/`` +
    ``masks/``, ``named_mask_folder``, ``paired_folders``) where ``root`` holds it beside other folders: the Semantic
    Drone Dataset's ``dataset/semantic_drone_dataset/`` (``original_images/`` + ``label_images_semantic/``) beside
    ``RGB_color_image_masks/``. None where no folder or several do (the COVID-19 Radiography Database's class
    folders each hold ``images/`` + ``masks/``: classes, not one layout)."""
    if not root.is_dir():
        return None
    found, level, looked = [], [root], 0
    for _ in range(DEEPER_LEVELS):
        below = []
        for folder in level:
            try:
                below += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                                and p.name != "__MACOSX")
            except OSError:
                continue
        for folder in below[:DEEPER_LOOKED_AT - looked]:
            if (((folder / "images").is_dir() and (folder / "masks").is_dir()) or named_mask_folder(folder)
                    or paired_folders(folder)):
                found.append(folder)
        looked += len(below)
        level = [f for f in below if f not in found]
        if looked >= DEEPER_LOOKED_AT or len(found) > 1:
            break
    return found[0] if len(found) == 1 else None


def is_hf_segmentation(path: str | Path) -> bool:
    """A Hugging Face dataset of images and their masks (two ``Image`` columns: ``segmentation.hf_datasets``) as a
    Hub repository's Parquet files (its ``data/``, or one file) or a ``save_to_disk`` folder."""
    from headstart.tasks.image.hf_datasets import dataset_features, mask_column

    return mask_column(dataset_features(Path(path))) is not None
