"""Text classification (BERT-family encoders). This module imports no torch: ``infer_task`` asks it about folders."""

from __future__ import annotations

from pathlib import Path

DATASETS_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")


def is_datasets_folder(path: Path) -> bool:
    """A folder written by ``datasets`` ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / f).is_file() for f in DATASETS_FILES)
