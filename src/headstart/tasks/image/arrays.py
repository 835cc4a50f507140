"""Images stored as arrays, as the datasets ship them:

- a ``.npz`` file, as MedMNIST (``pathmnist.npz``: ``train_images`` (N, 28, 28, 3), ``train_labels`` (N, 1),
  ``val_*``, ``test_*``) and Keras' ``mnist.npz`` (``x_train`` (N, 28, 28), ``y_train``, ``x_test``, ``y_test``) ship
  them. Each split's images are an array of N images (N x H x W grey, N x H x W x 3 colour, or channels first
  N x 3 x H x W) and its labels N integers (or N x 1). Values up to 1 are scaled to 255, other integer ranges above
  255 read as 16 bits. The file is read with ``allow_pickle=False``: an array of Python objects is refused, never
  unpickled;
- the MNIST family's IDX files as torchvision downloads them (``idx.py``: MNIST, Fashion-MNIST, KMNIST, EMNIST);
- CIFAR-10's and CIFAR-100's "python version" batches as torchvision downloads them (``cifar.py``, read by an
  unpickler that builds arrays and lists only);
- PatchCamelyon's HDF5 files (``hdf5.py``), whose images stay in their files until needed (``hdf5.H5Row``);
- SVHN's cropped digits, ``train_32x32.mat`` and ``test_32x32.mat``, as torchvision downloads them;
- STL-10's binary files (``stl10.py``), read from their offsets when needed (``stl10.BinRow``).

Each image becomes a PNG's bytes in memory (PCam's and STL-10's stay in their files until needed), named
``FILE:SPLIT:INDEX`` (a folder's: ``FOLDER/SPLIT:INDEX``).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from headstart.errors import DataError
from headstart.tasks.image import cifar, hdf5, idx, stl10
from headstart.tasks.image.pixel_tables import PixelRow, png_bytes, white
from headstart.tasks.image.stored import Stored
from headstart.tasks.tables import SPLIT_VALUES

SUFFIXES = (".npz",)
_IMAGES = re.compile(r"(?:(?P<a>train|training|val|valid|validation|test|testing)_(?:images?|x|imgs?|data))"
                     r"|(?:(?:x|images?|imgs?)_(?P<b>train|training|val|valid|validation|test|testing))", re.I)


@dataclass
class ArraySplit:
    images: str  # the array's name in the file
    labels: str | None


def _keys(names: list[str]) -> dict[str, ArraySplit]:
    """``{split: (images key, labels key)}`` of the arrays a file names."""
    found: dict[str, ArraySplit] = {}
    for name in names:
        m = _IMAGES.fullmatch(name)
        if not m:
            continue
        word = (m.group("a") or m.group("b")).lower()
        split = SPLIT_VALUES.get(word)
        if split is None:
            continue
        candidates = [name.replace(k, v) for k, v in (("images", "labels"), ("image", "label"), ("imgs", "labels"),
                                                      ("x_", "y_"), ("_x", "_y"), ("data", "labels"))] + \
            [f"y_{word}", f"{word}_labels", f"labels_{word}"]
        found[split] = ArraySplit(name, next((c for c in candidates if c in names and c != name), None))
    return found


@dataclass
class ArrayImages:
    """The images of array data by split (in memory), how they were read, and the classes in order when the data
    names them (None: the labels' own values)."""

    rows: dict[str, list[PixelRow]]
    layout: str
    classes: list[str] | None = None
    unmirrored: str = ""  # why a mirrored image is none of the data's (``Splits.unmirrored``)


def is_array_data(path: str | Path) -> bool:
    """A ``.npz`` file of arrays named as images of a split (``train_images``, ``x_train``...), SVHN's ``.mat``, or a
    folder of IDX files (the MNIST family's), CIFAR batches, PCam's HDF5 files, STL-10's binaries or SVHN's files."""
    return _reader(Path(path)) is not None


def _reader(path: Path) -> Callable[[tuple[str, ...]], ArrayImages] | None:
    """What reads ``path``'s splits (given the splits wanted), found once: None when it holds no array data."""
    if not path.is_dir():
        files = svhn_files(path)
        return partial(_read_svhn, files) if files else partial(_read_npz, path) if is_npz_images(path) else None
    if (found := cifar.find(path)) is not None:
        return partial(_read_cifar, found)
    if (h5 := hdf5.find(path)) is not None:
        return partial(_read_h5, h5)
    if files := svhn_files(path):
        return partial(_read_svhn, files)
    if (stl := stl10.find(path)) is not None:
        return partial(_read_stl10, stl)
    sets = idx.find(path)
    if len(sets) > 1:
        return partial(_several_idx_sets, path, sets)
    return partial(_read_idx, sets[0]) if sets else None


def _several_idx_sets(path: Path, sets: list[idx.IdxSet], only: tuple[str, ...]) -> ArrayImages:
    names = ", ".join(f"{s.folder.relative_to(path) if s.folder != path else '.'}/{s.name or 'MNIST-style'}"
                      for s in sets)
    raise DataError(f"{path} holds several sets of IDX files ({names}): give the folder of one (or move one set's "
                    "files into a folder of their own)")


def is_npz_images(path: Path) -> bool:
    """A ``.npz`` file of arrays named as images of a split."""
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return "train" in _keys(list(f.files))
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _damaged(path, exc) from None
    except (OSError, ValueError):
        return False


def _damaged(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); it is damaged or cut short (an "
                     "interrupted download?): download it again")


def _as_images(array: np.ndarray, where: str) -> np.ndarray:
    """N x H x W (grey) or N x H x W x 3 uint8 images from an array of images."""
    if array.dtype == object:
        raise DataError(f"{where}: an array of Python objects, not of pixel values")
    if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)  # channels first
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        raise DataError(f"{where}: images of shape {array.shape[1:]}; expected H x W, H x W x 3 or 3 x H x W")
    if array.dtype == np.uint8:
        return array
    top = white(float(array.max()) if array.size else 0.0)
    return np.clip(np.rint(array.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)


def read(path: Path, only: tuple[str, ...] = ()) -> ArrayImages:
    """The images of each split of array data (``only`` these splits, when given) as rows in memory; DataError for
    data that holds none (``is_array_data``), or labels that are not one class an image (MedMNIST's ChestMNIST has
    14 a scan)."""
    reader = _reader(path)
    if reader is None:
        raise DataError(f"{path}: no images stored as arrays (a .npz file, IDX files, CIFAR batches, PCam's HDF5, "
                        "STL-10's or SVHN's files)")
    return reader(only)


SVHN = re.compile(r"(?P<split>train|test|extra)_32x32\.mat")


def svhn_files(path: Path) -> dict[str, Path]:
    """SVHN's cropped digits as torchvision downloads them (``train_32x32.mat``, ``test_32x32.mat``, in the folder
    given, or the one file given): ``{split: file}``. ``extra_32x32.mat`` (531,131 more training digits) is left out."""
    files = [path] if path.is_file() else sorted(path.glob("*_32x32.mat")) if path.is_dir() else []
    found = {m.group("split"): f for f in files if (m := SVHN.fullmatch(f.name)) and m.group("split") != "extra"}
    found = dict(sorted(found.items(), key=lambda item: item[0] != "train"))
    return found if path.is_file() or "train" in found else {}


def _read_svhn(files: dict[str, Path], only: tuple[str, ...]) -> ArrayImages:
    """SVHN's ``X`` (32 x 32 x 3 x N) and ``y`` (N x 1, 1...10: 10 is the digit 0, as torchvision reads it)."""
    from scipy.io import loadmat

    rows, described = {}, []
    for split, path in files.items():
        if only and split not in only:
            continue
        try:
            mat = loadmat(str(path))
        except (OSError, ValueError, NotImplementedError) as exc:
            raise DataError(f"Cannot read {path} as SVHN's MATLAB file ({type(exc).__name__}: {exc}); it is damaged "
                            "or cut short (an interrupted download?): download it again") from None
        images, labels = mat.get("X"), mat.get("y")
        if images is None or labels is None or images.ndim != 4 or images.shape[2] != 3:
            raise DataError(f"{path}: expected SVHN's 'X' (32 x 32 x 3 x N) and 'y'; found "
                            f"{', '.join(k for k in mat if not k.startswith('__'))}")
        labels = labels.reshape(-1) % 10  # 10 is the digit 0
        rows[split] = _rows(images.transpose(3, 0, 1, 2), labels, split, path.with_name(f"{path.name}:{split}"),
                            path.name)
        described.append(f"{path.name} {len(labels)}")
    left = " (extra_32x32.mat not read: add its digits yourself for more training data)" \
        if any((f.parent / "extra_32x32.mat").is_file() for f in files.values()) else ""
    return ArrayImages(rows, f"SVHN {'; '.join(described)}{left}",
                       unmirrored="SVHN's digits are house numbers, and a mirrored digit is no digit")


def _rows(images: np.ndarray, labels: np.ndarray | None, split: str, name: Path, desc: str,
          names: dict[int, str] | None = None) -> list[PixelRow]:
    """Each image as a row in memory (a PNG's bytes) named ``NAME:INDEX``, labelled by its value's name in ``names``
    (else the value as text)."""
    from headstart.progress import progress_bar

    out = []
    with progress_bar(f"Reading {desc}", len(images)) as advance:
        for i, image in enumerate(images):
            value = None if labels is None else labels[i].item()
            label = None if value is None else names.get(int(value), str(value)) if names else str(value)
            out.append(PixelRow(name.with_name(f"{name.name}:{i}"), png_bytes(image), label, split))
            advance()
    return out


def _read_idx(found: idx.IdxSet, only: tuple[str, ...]) -> ArrayImages:
    rows, described, classes = {}, [], None
    for split in found.files:
        if only and split not in only:
            continue
        images, labels = idx.images(found, split)
        named = idx.class_names(found, labels) if labels is not None else None
        classes = named[0] if named else classes
        rows[split] = _rows(images, labels, split, found.folder / split, found.files[split][0].name,
                            named[1] if named else None)
        described.append(f"{found.files[split][0].name} {len(images)} of {images.shape[1]}x{images.shape[2]}"
                         + ("" if labels is not None else ", no labels file"))
    return ArrayImages(rows, f"IDX files {idx.shown(found)} ({'; '.join(described)})", classes, idx.unmirrored(found))


def _read_cifar(found: cifar.CifarSet, only: tuple[str, ...]) -> ArrayImages:
    names = cifar.classes(found)
    rows, described = {}, []
    for split, files in found.files.items():
        if not files or (only and split not in only):
            continue
        images, labels = cifar.images(found, split)
        rows[split] = _rows(images, labels, split, found.folder / split, f"{found.folder.name}/{split}",
                            dict(enumerate(names)) if names else None)
        described.append(f"{split} {len(images)} ({', '.join(f.name for f in files)})")
    what = "CIFAR-100 (fine labels)" if found.hundred else "CIFAR-10"
    return ArrayImages(rows, f"{what} batches {found.folder.name}/ ({'; '.join(described)})", names)


def _stored_rows(folder: Path, split: str, items: list[tuple[Stored, str, int | None]],
                 names: list[str] | None) -> list[PixelRow]:
    """Rows of images stored in their files (``(where, content key, label value)``), named ``FOLDER/SPLIT:INDEX``."""
    return [PixelRow(folder / f"{split}:{i}", where,
                     None if label is None else names[label] if names and label < len(names) else str(label),
                     split, key) for i, (where, key, label) in enumerate(items)]


def _read_h5(found: hdf5.H5Set, only: tuple[str, ...]) -> ArrayImages:
    """PCam's HDF5 files: not held in memory, each image read from its file when needed (``hdf5.H5Row``)."""
    from headstart.progress import progress_bar

    names = hdf5.class_names(found)
    rows, described = {}, []
    for split, (image_file, label_file) in found.files.items():
        if only and split not in only:
            continue
        with progress_bar(f"Reading {image_file.name}", hdf5.image_count(found, split)) as advance:
            items, shape = hdf5.rows(found, split, advance)
        rows[split] = _stored_rows(found.folder, split, items, names)
        described.append(f"{image_file.name} {len(items)} of {'x'.join(map(str, shape[1:]))}"
                         + (f" + {label_file.name}" if label_file is not None else ", no labels file"))
    return ArrayImages(rows, f"HDF5 files {found.folder.name}/ ({'; '.join(described)})", names)


def _read_stl10(found: stl10.Stl10Set, only: tuple[str, ...]) -> ArrayImages:
    """STL-10's binary files: not held in memory, each image read from its offset when needed (``stl10.BinRow``)."""
    from headstart.progress import progress_bar

    rows, described = {}, []
    for split, (image_file, _) in found.files.items():
        if only and split not in only:
            continue
        with progress_bar(f"Reading {image_file.name}", stl10.count(image_file)) as advance:
            items = stl10.rows(found, split, advance)
        rows[split] = _stored_rows(found.folder, split, items, found.names)
        described.append(f"{image_file.name} {len(items)}")
    left = ", unlabeled_X.bin not read (no labels)" if found.unlabeled else ""
    return ArrayImages(rows, f"STL-10 {found.folder.name}/ ({'; '.join(described)}{left})", found.names)


def _read_npz(path: Path, only: tuple[str, ...]) -> ArrayImages:
    rows: dict[str, list[PixelRow]] = {}
    described = []
    with np.load(path, allow_pickle=False) as f:
        keys = _keys(list(f.files))
        for split, key in keys.items():
            if only and split not in only:
                continue
            try:
                images = _as_images(f[key.images], f"{path.name}:{key.images}")
                labels = f[key.labels] if key.labels else None
            except ValueError as exc:  # an array of Python objects: numpy refuses it without pickle
                raise DataError(f"{path}: {exc} (headstart never unpickles a data file: save the images as numbers)"
                                ) from None
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # an entry cut short
                raise _damaged(path, exc) from None
            if labels is not None:
                labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels[:, None]
                if labels.shape[1] != 1:
                    raise DataError(f"{path}: {key.labels} holds {labels.shape[1]} labels an image (multi-label); "
                                    "headstart reads one class an image from arrays")
                if len(labels) != len(images):
                    raise DataError(f"{path}: {len(images)} images in {key.images}, {len(labels)} labels in "
                                    f"{key.labels}")
            rows[split] = _rows(images, None if labels is None else labels[:, 0], split,
                                path.with_name(f"{path.name}:{split}"), f"{path.name}:{key.images}")
            shape = "x".join(map(str, images.shape[1:]))
            described.append(f"{key.images} {len(images)} of {shape}" + (f" + {key.labels}" if key.labels else ""))
    return ArrayImages(rows, f"arrays {path.name} ({'; '.join(described)})")
