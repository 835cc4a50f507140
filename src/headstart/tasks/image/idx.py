"""The MNIST family as torchvision's ``datasets`` (and the sets' own sites) download it: IDX files of arrays.

``torchvision.datasets.MNIST("data", download=True)`` writes ``data/MNIST/raw/train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (and their ``.gz``);
FashionMNIST and KMNIST the same names under ``FashionMNIST/raw/`` and ``KMNIST/raw/``; EMNIST
``emnist-letters-train-images-idx3-ubyte``... (one set of several: ``balanced``, ``letters``...) with
``emnist-letters-mapping.txt`` (each label's character code) under ``EMNIST/raw/gzip/``.

An IDX file is a magic number (the values' type and the number of dimensions), the dimensions, then the values; it
is read as numbers, nothing in it is executed. ``t10k`` is the test split. The classes are the digits, Fashion-MNIST's
and KMNIST's names as torchvision gives them (from the folder's name), or EMNIST's characters from its mapping file
(its last code a label: ``letters`` merges the cases, named in lower case as torchvision does; EMNIST's images are
stored transposed: they are turned upright, as torchvision does).
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.errors import DataError

_IMAGES = re.compile(r"(?P<set>(?:emnist-[a-z]+-)?)(?P<split>train|t10k|test)-images[-.]idx3-ubyte(?:\.gz)?")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# torchvision's class names of the sets whose labels are indices (MNIST's are the digits themselves)
NAMES = {
    "fashionmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}


@dataclass
class IdxSet:
    """One set's IDX files: ``{split: (images file, labels file or None)}``, its name and the folder they are in."""

    folder: Path
    name: str  # '' (MNIST's names), or 'emnist-letters'
    files: dict[str, tuple[Path, Path | None]]


def _folders(path: Path) -> list[Path]:
    """Where torchvision puts the files under a folder given as DATA: the folder, its ``raw/`` (and ``raw/gzip/``),
    and a dataset folder's below it (``data/`` as ``MNIST("data")`` was given)."""
    found = [path, path / "raw", path / "raw" / "gzip", path / "gzip"]
    if path.is_dir():
        with os.scandir(path) as entries:  # the entries' types without a stat each (a folder of 100k images)
            subs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        found += [path / sub / raw for sub in subs for raw in ("raw", "raw/gzip")]
    return [f for f in found if f.is_dir()]


def find(path: str | Path) -> list[IdxSet]:
    """The sets of IDX image files under ``path`` (a folder), each with its splits; [] when there are none. Of a
    file and its ``.gz`` beside it, the unpacked one is read; a file may be inside a folder of its own name (as
    Kaggle's MNIST unpacks: ``train-images-idx3-ubyte/train-images-idx3-ubyte``)."""
    path = Path(path)
    if not path.is_dir():
        return []
    sets: dict[tuple[Path, str], dict[str, tuple[Path, Path | None]]] = {}
    for folder in _folders(path):
        for entry in sorted(folder.iterdir(), key=lambda p: (p.name.endswith(".gz"), p.name)):
            m, f = _IMAGES.fullmatch(entry.name), _file(entry)
            if not m or f is None:
                continue
            split = "test" if m.group("split") in ("t10k", "test") else "train"
            key = (folder, m.group("set").rstrip("-"))
            if split in sets.get(key, {}):
                continue  # the unpacked file came first
            labels = entry.name.removesuffix(".gz").replace("images", "labels").replace("idx3", "idx1")
            found = (_file(folder / name) for name in (labels, labels + ".gz"))
            sets.setdefault(key, {})[split] = (f, next((p for p in found if p is not None), None))
    return [IdxSet(folder, name, dict(sorted(files.items(), key=lambda item: item[0] != "train")))
            for (folder, name), files in sets.items() if "train" in files]


def shown(found: IdxSet) -> str:
    """The set as the layout line names it: ``MNIST/raw/``, ``EMNIST/raw/gzip/ emnist-letters``."""
    folder, parts = found.folder, []
    while folder.name in ("raw", "gzip") and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return "/".join([folder.name, *parts]) + "/" + (f" {found.name}" if found.name else "")


def _file(entry: Path) -> Path | None:
    """The file ``entry`` is, or the file of its name inside it (a folder of one file); None when neither exists."""
    if entry.is_file():
        return entry
    inner = entry / entry.name
    return inner if inner.is_file() else None


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds (DataError for a file that is not one, or is cut short)."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); it is damaged or cut short (an interrupted download?): "
                        "download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (its first bytes are {data[:4].hex()}, expected 0000 then a type)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    start, size = 4 + 4 * ndim, int(np.prod(dims)) * dtype.itemsize
    if len(data) < start + size:
        raise DataError(f"{path}: holds {len(data) - start} bytes of values, {size} expected for {dims}; it is cut "
                        "short (an interrupted download?): download it again")
    return np.frombuffer(data, dtype, int(np.prod(dims)), start).reshape(dims)


def class_names(found: IdxSet, labels: np.ndarray) -> tuple[list[str], dict[int, str]] | None:
    """The set's classes in order and ``{label value: class}``, when the set names them (None: the values are the
    classes, MNIST's digits)."""
    if found.name.startswith("emnist-"):
        mapping = found.folder / f"{found.name}-mapping.txt"
        if mapping.is_file():
            codes = {}
            for line in mapping.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and all(p.isdigit() for p in parts):  # 'letters' merges cases: '1 65 97' is 'a'
                    codes[int(parts[0])] = chr(int(parts[-1]))
            if codes:
                return [codes[k] for k in sorted(codes)], codes
        return None
    names = NAMES.get(_set_name(found))
    if names is None or int(labels.max(initial=0)) >= len(names):
        return None
    return names, dict(enumerate(names))


def _set_name(found: IdxSet) -> str:
    """The dataset's folder name in lower-case letters: ``fashionmnist`` of ``FashionMNIST/raw/`` (or
    ``fashion-mnist/``), ``kmnist``, ``mnist``."""
    folder = found.folder
    while folder.name in ("raw", "gzip") and folder.parent != folder:
        folder = folder.parent
    return re.sub(r"[^a-z]", "", folder.name.lower())


def unmirrored(found: IdxSet) -> str:
    """Why a mirrored image is none of the set's: handwritten digits or characters ('' for Fashion-MNIST's clothes)."""
    name = _set_name(found)
    if name == "fashionmnist":
        return ""
    what = "characters" if found.name.startswith("emnist-") or name == "kmnist" else "digits"
    return f"the IDX files hold handwritten {what}, and a mirrored {what[:-1]} is none of them"


def images(found: IdxSet, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A split's images (N x H x W uint8, upright) and labels (None: no labels file)."""
    image_file, label_file = found.files[split]
    pixels = read_idx(image_file)
    if pixels.ndim != 3:
        raise DataError(f"{image_file}: an array of shape {pixels.shape}; expected N x H x W images")
    if found.name.startswith("emnist-"):
        pixels = pixels.transpose(0, 2, 1)  # stored transposed
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    labels = read_idx(label_file) if label_file is not None else None
    if labels is not None and (labels.ndim != 1 or len(labels) != len(pixels)):
        raise DataError(f"{label_file}: {labels.shape} labels for the {len(pixels)} images of {image_file.name}")
    return pixels, labels
