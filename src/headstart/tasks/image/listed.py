"""Image classification sets whose labels and splits are files beside one folder of images, as torchvision's
``datasets`` (and the datasets' own sites) download them; the transfer-learning benchmarks:

- Oxford Flowers-102 (``flowers-102/``): ``jpg/image_00001.jpg``..., ``imagelabels.mat`` (a class 1...102 an image),
  ``setid.mat`` (``trnid``, ``valid``, ``tstid``: the image numbers of train, validation and test);
- Stanford Cars (``stanford_cars/``): ``cars_train/00001.jpg``..., ``devkit/cars_train_annos.mat`` (``fname``,
  ``class``), ``devkit/cars_meta.mat`` (``class_names``), ``cars_test/`` with ``cars_test_annos_withlabels.mat``;
- FGVC-Aircraft (``fgvc-aircraft-2013b/data/``): ``images/1025794.jpg``..., ``images_variant_train.txt``,
  ``_val.txt``, ``_test.txt`` (or ``_trainval.txt``) of ``1025794 707-320`` lines, ``variants.txt``.

``listed(folder)`` reads one, or returns None; ``image.data.discover`` makes its splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import DataError


@dataclass
class Listed:
    """What the files say: the classes in order, and ``(image file, class)`` pairs of each split they give."""

    layout: str
    classes: list[str]
    splits: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)  # train, val, test


def _mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=True)
    except (OSError, ValueError, NotImplementedError) as exc:  # v7.3 (HDF5) files, damaged files
        raise DataError(f"Cannot read {path} as a MATLAB file ({type(exc).__name__}: {exc})") from None


def _numbers(value: Any) -> list[int]:
    import numpy as np

    return [int(v) for v in np.atleast_1d(value).ravel()]


def flowers(root: Path) -> Listed | None:
    """Oxford Flowers-102 as its site and torchvision's ``Flowers102`` download it."""
    labels_file, images = root / "imagelabels.mat", root / "jpg"
    if not (labels_file.is_file() and images.is_dir()):
        return None
    labels = _numbers(_mat(labels_file)["labels"])
    classes = [str(c) for c in sorted(set(labels))]
    pairs = [(images / f"image_{i:05d}.jpg", str(label)) for i, label in enumerate(labels, start=1)]
    setid = root / "setid.mat"
    if not setid.is_file():
        return Listed(f"Oxford Flowers-102 ({images.name}/ labelled by {labels_file.name})", classes, {"train": pairs})
    ids = _mat(setid)
    splits = {split: [pairs[i - 1] for i in _numbers(ids[key]) if 0 < i <= len(pairs)]
              for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")) if key in ids}
    return Listed(f"Oxford Flowers-102 ({images.name}/ labelled by {labels_file.name}, splits by {setid.name})",
                  classes, splits)


def cars(root: Path) -> Listed | None:
    """Stanford Cars as torchvision's ``StanfordCars`` lays it out (the devkit's annotations and class names)."""
    devkit = root / "devkit"
    annos = next((p for p in (devkit / "cars_train_annos.mat", root / "cars_train_annos.mat") if p.is_file()), None)
    if annos is None or not (root / "cars_train").is_dir():
        return None
    meta = next((p for p in (devkit / "cars_meta.mat", root / "cars_meta.mat") if p.is_file()), None)
    names = [str(n) for n in _mat(meta)["class_names"]] if meta is not None else []

    def read(path: Path, folder: Path) -> list[tuple[Path, str]]:
        table = _mat(path)["annotations"]
        out = []
        for fname, cls in zip(table["fname"].ravel(), table["class"].ravel()):
            index = int(cls)
            out.append((folder / str(fname), names[index - 1] if 0 < index <= len(names) else str(index)))
        return out

    splits = {"train": read(annos, root / "cars_train")}
    test = next((p for p in (root / "cars_test_annos_withlabels.mat", devkit / "cars_test_annos_withlabels.mat")
                 if p.is_file()), None)
    if test is not None and (root / "cars_test").is_dir():
        splits["test"] = read(test, root / "cars_test")
    used = {c for pairs in splits.values() for _, c in pairs}
    classes = [n for n in names if n in used] + sorted(used - set(names))
    return Listed(f"Stanford Cars (cars_train/ labelled by {annos.name}"
                  + (f", cars_test/ by {test.name}" if "test" in splits else "")
                  + (f", class names from {meta.name}" if meta else "") + ")", classes, splits)


def aircraft(root: Path) -> Listed | None:
    """FGVC-Aircraft as its site and torchvision's ``FGVCAircraft`` download it (the variant level, as torchvision's
    default)."""
    data = root / "data" if (root / "data" / "images").is_dir() else root
    images = data / "images"
    if not images.is_dir() or not any((data / f"images_variant_{s}.txt").is_file() for s in ("train", "trainval")):
        return None

    def read(path: Path) -> list[tuple[Path, str]]:
        pairs = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            image, _, name = line.strip().partition(" ")
            if image and name:
                pairs.append((images / f"{image}.jpg", name.strip()))
        return pairs

    given = {s: data / f"images_variant_{s}.txt" for s in ("train", "val", "test")}
    if not given["train"].is_file():  # only trainval + test: validation is held out of trainval
        given["train"], given["val"] = data / "images_variant_trainval.txt", Path("")
    splits = {s: read(p) for s, p in given.items() if p.is_file()}
    order = data / "variants.txt"
    used = {c for pairs in splits.values() for _, c in pairs}
    listed = [ln.strip() for ln in order.read_text(encoding="utf-8").splitlines()] if order.is_file() else []
    classes = [c for c in listed if c in used] + sorted(used - set(listed))
    files = ", ".join(p.name for p in given.values() if p.is_file())
    return Listed(f"FGVC-Aircraft ({images.name}/ labelled by {files}, variants)", classes, splits)


READERS = (flowers, cars, aircraft)


def listed(root: Path) -> Listed | None:
    """The first of ``READERS`` that recognises ``root`` (or None)."""
    if not root.is_dir():
        return None
    for reader in READERS:
        found = reader(root)
        if found is not None:
            return found
    return None
