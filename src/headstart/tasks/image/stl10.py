"""STL-10 as torchvision's ``datasets`` (and the set's site) download it: ``stl10_binary/`` with ``train_X.bin``
(5,000 images of 96 x 96 x 3, each stored as its red, green then blue planes, column by column), ``train_y.bin``
(a byte a label, 1...10), ``test_X.bin`` / ``test_y.bin`` (8,000) and ``class_names.txt`` (a name a line);
``unlabeled_X.bin`` (100,000 images without labels) is named, not read.

The files are fixed-size records: an image is read from its offset when needed (``BinRow``), not held in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import DataError
from headstart.tasks.image.stored import bitmap

FOLDER = "stl10_binary"
SIDE = 96
RECORD = 3 * SIDE * SIDE
BLOCK = 512  # images read at a time while hashing


@dataclass
class Stl10Set:
    folder: Path
    files: dict[str, tuple[Path, Path | None]]  # split -> (images, labels)
    names: list[str] | None
    unlabeled: bool


def find(path: str | Path) -> Stl10Set | None:
    """The ``stl10_binary/`` folder ``path`` is or holds (``data/`` as ``STL10("data")`` was given), or None."""
    path = Path(path)
    for folder in (path, path / FOLDER):
        if (folder / "train_X.bin").is_file():
            files = {split: (folder / f"{split}_X.bin", folder / f"{split}_y.bin" if (folder / f"{split}_y.bin")
                             .is_file() else None) for split in ("train", "test") if (folder / f"{split}_X.bin").is_file()}
            names_file = folder / "class_names.txt"
            names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()] if names_file.is_file() \
                else None
            return Stl10Set(folder, files, names or None, (folder / "unlabeled_X.bin").is_file())
    return None


def _upright(record: np.ndarray) -> np.ndarray:
    """A record's bytes as an H x W x 3 image (stored channel by channel, column by column)."""
    return record.reshape(3, SIDE, SIDE).transpose(2, 1, 0)


@dataclass(frozen=True, slots=True, eq=False)
class BinRow:
    """Where ``*_X.bin`` stores an image: record ``index``; read as a BMP file's bytes."""

    file: str
    index: int

    def read(self) -> bytes:
        with open(self.file, "rb") as f:
            f.seek(self.index * RECORD)
            record = np.frombuffer(f.read(RECORD), np.uint8)
        if record.size != RECORD:
            raise OSError(f"{self.file} ends before image {self.index}")
        return bitmap(np.ascontiguousarray(_upright(record)))


def count(path: Path) -> int:
    size = path.stat().st_size
    if size % RECORD:
        raise DataError(f"{path}: {size} bytes, not a whole number of {SIDE} x {SIDE} x 3 images ({RECORD} bytes each); "
                        "it is cut short (an interrupted download?): download it again")
    return size // RECORD


def rows(found: Stl10Set, split: str, advance: Any) -> list[tuple[BinRow, str, int | None]]:
    """A split's images as ``(where, content key, label value)``, hashed a block at a time (``advance(n)`` after
    each); labels are 1...10 in the file, 0...9 here."""
    image_file, label_file = found.files[split]
    n = count(image_file)
    labels = None
    if label_file is not None:
        labels = np.fromfile(label_file, np.uint8).astype(np.int64) - 1
        if len(labels) != n:
            raise DataError(f"{label_file}: {len(labels)} labels for the {n} images of {image_file.name}")
    out = []
    with open(image_file, "rb") as f:
        for start in range(0, n, BLOCK):
            block = np.frombuffer(f.read(RECORD * min(BLOCK, n - start)), np.uint8).reshape(-1, RECORD)
            for i, record in enumerate(block, start):
                key = hashlib.sha1(record.tobytes()).hexdigest()
                out.append((BinRow(str(image_file), i), key, None if labels is None else int(labels[i])))
            advance(len(block))
    return out
