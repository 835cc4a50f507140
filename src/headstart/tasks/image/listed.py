"""Image classification sets whose labels and splits are files beside one folder of images, as torchvision's
``datasets`` (and the datasets' own sites) download them; the transfer-learning benchmarks:

- Oxford Flowers-102 (``flowers-102/``): ``jpg/image_00001.jpg``..., ``imagelabels.mat`` (a class 1...102 an image),
  ``setid.mat`` (``trnid``, ``valid``, ``tstid``: the image numbers of train, validation and test);
- Stanford Cars (``stanford_cars/``): ``cars_train/00001.jpg``..., ``devkit/cars_train_annos.mat`` (``fname``,
  ``class``), ``devkit/cars_meta.mat`` (``class_names``), ``cars_test/`` with ``cars_test_annos_withlabels.mat``;
- FGVC-Aircraft (``fgvc-aircraft-2013b/data/``): ``images/1025794.jpg``..., ``images_variant_train.txt``,
  ``_val.txt``, ``_test.txt`` (or ``_trainval.txt``) of ``1025794 707-320`` lines, ``variants.txt``;
- GTSRB (``gtsrb/GTSRB/``): ``Training/00000/*.ppm``... and ``Final_Test/Images/*.ppm`` with ``GT-final_test.csv``.

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
    groups: dict[Path, str] = field(default_factory=dict)  # images that stay on one side of a validation split


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


def gtsrb(root: Path) -> Listed | None:
    """GTSRB as its site and torchvision's ``GTSRB`` download it: ``GTSRB/Training/00000/*.ppm`` (a folder a class, 0
    to 42) and ``GTSRB/Final_Test/Images/*.ppm`` labelled by ``GT-final_test.csv`` (``Filename;...;ClassId``: beside
    ``GTSRB/``, where torchvision puts it, or inside it, ``Final_Test/`` or ``Images/``). Given as ``GTSRB/``, the
    folder holding it, or torchvision's root (``gtsrb/GTSRB/``)."""
    import csv

    from headstart.tasks.image.decode import is_image_file

    base = next((b for b in (root, root / "GTSRB", root / "gtsrb" / "GTSRB") if (b / "Training").is_dir()), None)
    if base is None:
        return None
    folders = sorted(d for d in (base / "Training").iterdir() if d.is_dir())
    if not folders or not all(d.name.isdigit() and len(d.name) == 5 for d in folders):
        return None
    splits = {"train": [(f, str(int(d.name))) for d in folders for f in sorted(d.iterdir()) if is_image_file(f)]}
    images = base / "Final_Test" / "Images"
    table = next((t for t in (base.parent / "GT-final_test.csv", base / "GT-final_test.csv",
                              base / "Final_Test" / "GT-final_test.csv", images / "GT-final_test.csv") if t.is_file()),
                 None)
    if table is not None and images.is_dir():
        with open(table, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        if not rows or not {"Filename", "ClassId"} <= set(rows[0]):
            raise DataError(f"{table}: expected GTSRB's 'Filename;...;ClassId' columns, found "
                            f"{';'.join(rows[0]) if rows else 'no rows'}")
        splits["test"] = [(images / r["Filename"], str(int(r["ClassId"]))) for r in rows]
    classes = sorted({c for pairs in splits.values() for _, c in pairs}, key=int)
    test = f", Final_Test/Images/ labelled by {table.name}" if "test" in splits else ""
    # 00012_00029.ppm: frame 29 of track 12, thirty photos of one sign as a car passed it: a track is one unit
    groups = {f: f"{f.parent.name}/{f.name.split('_')[0]}" for f, _ in splits["train"] if "_" in f.name}
    return Listed(f"GTSRB (Training/ a folder a class{test}; each track's frames on one side of the validation split)",
                  classes, splits, groups)


READERS = (flowers, cars, aircraft, gtsrb)


def listed(root: Path) -> Listed | None:
    """The first of ``READERS`` that recognises ``root`` (or None)."""
    if not root.is_dir():
        return None
    for reader in READERS:
        found = reader(root)
        if found is not None:
            return found
    return None
