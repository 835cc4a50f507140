"""PatchCamelyon (PCam) as torchvision's ``datasets`` (and the set's own download) lays it out: HDF5 files of arrays.

``torchvision.datasets.PCAM("data", split=..., download=True)`` writes ``data/pcam/`` with
``camelyonpatch_level_2_split_train_x.h5`` (dataset ``x``: N x 96 x 96 x 3 uint8 patches of lymph node sections) and
``camelyonpatch_level_2_split_train_y.h5`` (dataset ``y``: N x 1 x 1 x 1, 1 when the patch's centre holds metastatic
tumour tissue), the same for ``valid`` and ``test``. Any pair of ``*_{split}_x.h5`` / ``*_{split}_y.h5`` files with
an ``x`` and a ``y`` dataset is read the same way.

262,144 training patches are 7 GB of pixels: they are not read into memory. Reading the folder hashes each patch
(the content key) a block at a time and keeps where it is (``H5Row``: a file, a dataset and an index); the patch is
read from the file when it is needed and handed on as an uncompressed BMP file's bytes. Reading needs ``pip install h5py``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import DataError
from headstart.tasks.image.stored import bitmap

_X = re.compile(r"(?P<stem>.*?)[_-]?(?P<split>train|training|valid|val|validation|test)[_-]x\.h(?:df)?5", re.I)
SPLITS = {"train": "train", "training": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
NAMES = {"camelyonpatch": ["normal", "tumor"]}  # PCam's labels: 1 when the centre holds metastatic tissue
BLOCK = 1024  # patches read at a time while hashing


@dataclass
class H5Set:
    """The HDF5 files of a set: ``{split: (images file, labels file or None)}``."""

    folder: Path
    files: dict[str, tuple[Path, Path | None]]


def find(path: str | Path) -> H5Set | None:
    """The ``*_{split}_x.h5`` files in ``path`` or in its ``pcam/`` (``data/`` as ``PCAM("data")`` was given), with
    their ``_y.h5``; None without a training split."""
    path = Path(path)
    if not path.is_dir():
        return None
    for folder in (path, path / "pcam"):
        if not folder.is_dir():
            continue
        files: dict[str, tuple[Path, Path | None]] = {}
        for f in sorted(folder.iterdir()):
            m = _X.fullmatch(f.name)
            if m and f.is_file():
                labels = f.with_name(f.name[: m.end("split")] + f.name[m.end("split"):].replace("x", "y", 1))
                files[SPLITS[m.group("split").lower()]] = (f, labels if labels.is_file() else None)
        if "train" in files:
            order = {"train": 0, "val": 1, "test": 2}
            return H5Set(folder, dict(sorted(files.items(), key=lambda item: order[item[0]])))
    return None


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError("HDF5 files of images (PCam's *.h5) are read with h5py: pip install h5py "
                        "(or pip install 'headstart[formats]')") from None
    return h5py


@functools.lru_cache(maxsize=8)
def _open(path: str, pid: int) -> Any:
    """An open HDF5 file, one per file and process (a data-loading worker opens its own)."""
    return _h5py().File(path, "r")


def _dataset(path: Path, name: str) -> Any:
    try:
        f = _open(str(path), os.getpid())
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc}); it is damaged or cut short (an interrupted "
                        "download? torchvision downloads PCam's .h5.gz: they are unpacked before reading)") from None
    if name not in f:
        raise DataError(f"{path}: no dataset '{name}' (it holds {', '.join(f.keys()) or 'none'})")
    return f[name]


@dataclass(frozen=True, slots=True, eq=False)
class H5Row:
    """Where an HDF5 file stores an image: index ``index`` of its dataset ``x``; read as a BMP file's bytes."""

    file: str
    index: int

    def read(self) -> bytes:
        return bitmap(_upright(np.asarray(_dataset(Path(self.file), "x")[self.index])))


def _upright(pixels: np.ndarray) -> np.ndarray:
    """An image as PIL takes it: H x W or H x W x 3, uint8."""
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return pixels if pixels.dtype == np.uint8 else np.clip(pixels, 0, 255).astype(np.uint8)


def class_names(found: H5Set) -> list[str] | None:
    stem = _X.fullmatch(found.files["train"][0].name).group("stem").lower()
    return next((names for key, names in NAMES.items() if stem.startswith(key)), None)


def rows(found: H5Set, split: str, advance: Any) -> tuple[list[tuple[H5Row, str, int | None]], tuple[int, ...]]:
    """A split's images as ``(where, content key, label)`` (label None: no labels file) and their shape, hashing the
    patches a block at a time (``advance(n)`` after each)."""
    image_file, label_file = found.files[split]
    images = _dataset(image_file, "x")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DataError(f"{image_file}: 'x' of shape {images.shape}; expected N x H x W x 3 (or N x H x W) images")
    labels = None
    if label_file is not None:
        labels = np.asarray(_dataset(label_file, "y")).reshape(-1)
        if len(labels) != len(images):
            raise DataError(f"{label_file}: {len(labels)} labels for the {len(images)} images of {image_file.name}")
    out = []
    for start in range(0, len(images), BLOCK):
        block = np.asarray(images[start: start + BLOCK])
        for i, pixels in enumerate(block, start):
            key = hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
            out.append((H5Row(str(image_file), i), key, None if labels is None else int(labels[i])))
        advance(len(block))
    return out, tuple(images.shape)


def image_count(found: H5Set, split: str) -> int:
    return int(_dataset(found.files[split][0], "x").shape[0])
