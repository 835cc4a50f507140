"""Text classification (BERT-family encoders). This module imports no torch: ``infer_task`` asks it about folders."""

from __future__ import annotations

from pathlib import Path

from headstart.tasks.tables import IMAGE_SUFFIXES

DATASETS_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
TEXT_FILE_SUFFIXES = (".txt",)  # class folders of these are text data (IMDB's aclImdb/, BBC News' bbc/)


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")


def _holds(folder: Path, suffixes: tuple[str, ...], limit: int = 200) -> bool:
    """Whether ``folder`` holds (directly, among its first ``limit`` entries) a file with one of ``suffixes``."""
    for i, p in enumerate(folder.iterdir()):
        if i >= limit:
            return False
        if p.suffix.lower() in suffixes and not p.name.startswith("."):
            return True
    return False


def is_text_folder(path: Path) -> bool:
    """A folder of class folders of .txt files, one text per file (BBC News' ``bbc/business/001.txt``), or of split
    folders of them (IMDB's ``aclImdb/train/pos/0_9.txt``): 2 or more such class folders and no image files in them."""
    if not path.is_dir() or ((path / "images").is_dir() and (path / "labels").is_dir()):  # YOLO's .txt boxes
        return False
    for level in (path, *_folders(path)):
        classes = _folders(level)
        texts = [c for c in classes if _holds(c, TEXT_FILE_SUFFIXES)]
        if len(texts) >= 2 and not any(_holds(c, IMAGE_SUFFIXES) for c in classes):
            return True
    return False


def is_datasets_folder(path: Path) -> bool:
    """A folder written by ``datasets`` ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / f).is_file() for f in DATASETS_FILES)
