"""CIFAR-10 and CIFAR-100 as torchvision's ``datasets`` (and the sets' site, "python version") download them.

``torchvision.datasets.CIFAR10("data", download=True)`` writes ``data/cifar-10-batches-py/``: ``data_batch_1`` ...
``data_batch_5`` (the training images), ``test_batch`` and ``batches.meta`` (``label_names``); CIFAR-100
``data/cifar-100-python/``: ``train``, ``test`` and ``meta`` (``fine_label_names``, ``coarse_label_names``). Each
batch is a Python pickle of a dict: ``data`` (N x 3072 uint8, each image's red, green then blue 32 x 32 planes),
``labels`` (CIFAR-100: ``fine_labels``, the 100 classes, and ``coarse_labels``, the 20 superclasses).

Pickles can run code when loaded: these are read by an unpickler that builds nothing but dicts, lists, strings,
numbers and NumPy arrays (``SafeUnpickler``); a file that asks for anything else is refused, unread.
"""

from __future__ import annotations

import codecs
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import DataError

FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
_TRAIN_10 = tuple(f"data_batch_{i}" for i in range(1, 6))


def _allowed() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name: how NumPy rebuilds an array and its dtype (under the module names
    of NumPy 1 and 2), and how Python 3 writes bytes at protocol 2."""
    rebuild = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct, whatever module it lives in
    out: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "_reconstruct")] = rebuild
        out[(module, "scalar")] = np.float64(0).__reduce__()[0]
    for module in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol 5's arrays
        out[(module, "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]
    out[("numpy", "ndarray")], out[("numpy", "dtype")] = np.ndarray, np.dtype
    out[("_codecs", "encode")] = codecs.encode  # how protocol 2 stores bytes written by Python 3
    return out


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds built-in containers, strings, numbers and NumPy arrays."""

    ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        return found


def load(path: Path) -> dict[str, Any]:
    """A CIFAR batch's dict (keys as text), read with ``SafeUnpickler``; DataError for a file that is not one."""
    try:
        data = SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path}: not a CIFAR batch, not read ({type(exc).__name__}: {exc}); headstart loads no "
                        "pickle beyond arrays and lists") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a pickle of {type(data).__name__}, not a CIFAR batch's dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in data.items()}


@dataclass
class CifarSet:
    """A CIFAR folder: its batch files by split, the meta file, and whether it is CIFAR-100."""

    folder: Path
    files: dict[str, list[Path]]
    meta: Path | None
    hundred: bool


def find(path: str | Path) -> CifarSet | None:
    """The CIFAR folder ``path`` is, or holds (``data/`` as ``CIFAR10("data")`` was given), or None."""
    path = Path(path)
    if not path.is_dir():
        return None
    for folder in (path, *(path / name for name in FOLDERS)):
        ten = [folder / name for name in _TRAIN_10 if (folder / name).is_file()]
        if ten:
            test = [folder / "test_batch"] if (folder / "test_batch").is_file() else []
            meta = folder / "batches.meta"
            return CifarSet(folder, {"train": ten, "test": test}, meta if meta.is_file() else None, False)
        if (folder / "train").is_file() and (folder / "meta").is_file():
            test = [folder / "test"] if (folder / "test").is_file() else []
            return CifarSet(folder, {"train": [folder / "train"], "test": test}, folder / "meta", True)
    return None


def classes(found: CifarSet) -> list[str] | None:
    """The class names in label order (``label_names``, CIFAR-100's ``fine_label_names``), None without a meta file."""
    if found.meta is None:
        return None
    names = load(found.meta).get("fine_label_names" if found.hundred else "label_names")
    if not isinstance(names, (list, tuple)) or not names:
        return None
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def images(found: CifarSet, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's images (N x 32 x 32 x 3 uint8) and labels (CIFAR-100: the fine labels)."""
    pixels, labels = [], []
    for path in found.files[split]:
        batch = load(path)
        data, values = batch.get("data"), batch.get("fine_labels" if found.hundred else "labels")
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or values is None:
            raise DataError(f"{path}: expected 'data' of N x 3072 pixel values and "
                            f"'{'fine_labels' if found.hundred else 'labels'}'; found {sorted(batch)}")
        if len(values) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(values)} labels")
        pixels.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(values, dtype=np.int64))
    return np.concatenate(pixels).astype(np.uint8), np.concatenate(labels)
