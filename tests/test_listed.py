"""The transfer-learning benchmarks whose labels and splits are files beside one folder of images, laid out as their
sites and torchvision's ``datasets`` download them (``tasks/image/listed.py``): Oxford Flowers-102, Stanford Cars,
FGVC-Aircraft. Built from hymenoptera's real photos, with real MATLAB and text files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HYMENOPTERA, needs_shared

from headstart.tasks.image.data import discover, labelled_samples

pytestmark = needs_shared(HYMENOPTERA)


def _photos(cls: str, n: int) -> list[Path]:
    return sorted((HYMENOPTERA / "train" / cls).glob("*.jpg"))[:n] + \
        sorted((HYMENOPTERA / "val" / cls).glob("*.jpg"))[: max(0, n - 120)]


def _savemat(path: Path, values: dict) -> None:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), values)


def test_oxford_flowers_102_as_downloaded_trains_on_its_splits_and_evaluates_its_test_split(tmp_path):
    """jpg/image_00001.jpg..., imagelabels.mat, setid.mat (trnid, valid, tstid); Udacity's cat_to_name.json beside
    names the classes; evaluate DATA scores the test split."""
    from headstart import ImageClassifier

    root = tmp_path / "flowers-102"
    (root / "jpg").mkdir(parents=True)
    labels = []
    for number, cls in ((1, "ants"), (2, "bees")):
        for f in _photos(cls, 30):
            labels.append(number)
            shutil.copy(f, root / "jpg" / f"image_{len(labels):05d}.jpg")
    _savemat(root / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    ids = {1: list(range(1, 31)), 2: list(range(31, 61))}
    trn, val, tst = ([i for c in (1, 2) for i in ids[c][a:b]] for a, b in ((0, 18), (18, 24), (24, 30)))
    _savemat(root / "setid.mat", {"trnid": np.array([trn]), "valid": np.array([val]), "tstid": np.array([tst])})
    (tmp_path / "cat_to_name.json").write_text(json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid"}))
    splits = discover(root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 12, 12) and not splits.val_held_out
    assert splits.classes == ["hard-leaved pocket orchid", "pink primrose"]
    assert "Oxford Flowers-102 (jpg/ labelled by imagelabels.mat, splits by setid.mat)" in splits.layout
    names = {splits.classes[s.label] for s in splits.train if int(s.path.stem[-5:]) <= 30}  # the ants: label 1
    assert names == {"pink primrose"}

    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(
        root, out=tmp_path / "run")
    assert clf.metrics_["test"]["num_samples"] == 12
    report = clf.evaluate(root)  # the listed test images, labelled 1 and 2: the run's aliases name them
    assert report["num_samples"] == 12 and report["accuracy"] == pytest.approx(clf.metrics_["test"]["accuracy"])
    assert report["accuracy"] > report["baseline"]["accuracy"]


def test_stanford_cars_and_fgvc_aircraft_as_torchvision_lays_them_out(tmp_path):
    """Stanford Cars: cars_train/ + devkit/cars_train_annos.mat (fname, class), devkit/cars_meta.mat (class names),
    cars_test/ + cars_test_annos_withlabels.mat; a listed image that is missing is skipped, named. FGVC-Aircraft:
    data/images/<id>.jpg, images_variant_{train,val,test}.txt of '<id> <variant>' (variants with blanks and /)."""
    cars = tmp_path / "stanford_cars"
    names = np.array([np.array(["AM General Hummer SUV 2000"]), np.array(["Acura RL Sedan 2012"])], dtype=object)
    _savemat(cars / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for split, n in (("train", 16), ("test", 6)):
        photos = [(f, c) for c, cls in ((1, "ants"), (2, "bees")) for f in _photos(cls, 22)[(0 if split == "train" else 16):][:n]]
        annos = np.zeros(len(photos) + (split == "train"), dtype=fields)
        (cars / f"cars_{split}").mkdir(parents=True)
        for i, (f, c) in enumerate(photos):
            shutil.copy(f, cars / f"cars_{split}" / f"{i + 1:05d}.jpg")
            annos[i] = (1, 1, 10, 10, c, f"{i + 1:05d}.jpg")
        if split == "train":
            annos[-1] = (1, 1, 10, 10, 1, "09999.jpg")  # listed, not there
        target = cars / "devkit" / "cars_train_annos.mat" if split == "train" else cars / "cars_test_annos_withlabels.mat"
        _savemat(target, {"annotations": annos.reshape(1, -1)})
    found = discover(cars)
    assert found.classes == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert len(found.train) + len(found.val) == 32 and found.val_held_out and len(found.test) == 12
    assert found.skipped == [(str(cars / "cars_train" / "09999.jpg"), "listed, but not found")]
    samples, _ = labelled_samples(cars, found.classes)
    assert len(samples) == 12 and {found.classes[s.label] for s in samples} == set(found.classes)

    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    variants = ["Cessna 172", "F/A-18"]
    (data / "variants.txt").write_text("\n".join(["707-320", *variants]) + "\n")
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for variant, cls in zip(variants, ("ants", "bees")):
        for i, f in enumerate(_photos(cls, 24)):
            image = f"{1000000 + len(lines['train']) + len(lines['val']) + len(lines['test'])}"
            shutil.copy(f, data / "images" / f"{image}.jpg")
            lines["train" if i < 16 else "val" if i < 20 else "test"].append(f"{image} {variant}")
    for split, rows in lines.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    air = discover(tmp_path / "fgvc-aircraft-2013b")
    assert air.classes == variants and (len(air.train), len(air.val), len(air.test)) == (32, 8, 8)
    assert "FGVC-Aircraft (images/ labelled by images_variant_train.txt, images_variant_val.txt" in air.layout
    first = next(s for s in air.train if s.path.stem == lines["train"][0].split()[0])
    assert air.classes[first.label] == "Cessna 172"


def test_gtsrb_as_torchvision_downloads_it_keeps_each_track_on_one_side(tmp_path):
    """gtsrb/GTSRB/Training/00000/00003_00001.ppm (class 0, track 3, frame 1) and Final_Test/Images/*.ppm labelled by
    gtsrb/GT-final_test.csv (semicolons, ClassId): read from torchvision's root; classes 0, 1 as numbers; the frames
    of a track never straddle the validation split; evaluate scores the test images."""
    from PIL import Image

    base = tmp_path / "data" / "gtsrb" / "GTSRB"
    for c, cls in enumerate(("ants", "bees")):
        folder = base / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        for i, photo in enumerate(_photos(cls, 24)):  # 6 tracks of 4 frames
            Image.open(photo).convert("RGB").resize((48, 48)).save(folder / f"{i // 4:05d}_{i % 4:05d}.ppm")
        (folder / f"GT-{c:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    images = base / "Final_Test" / "Images"
    images.mkdir(parents=True)
    lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, photo in enumerate(sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:3]):
        Image.open(photo).convert("RGB").resize((48, 48)).save(images / f"{i:05d}.ppm")
        lines.append(f"{i:05d}.ppm;48;48;5;5;43;43;1")
    (base.parent / "GT-final_test.csv").write_text("\n".join(lines) + "\n")
    splits = discover(tmp_path / "data")
    assert splits.classes == ["0", "1"] and len(splits.train) + len(splits.val) == 48 and len(splits.test) == 3
    assert splits.layout.startswith("GTSRB (Training/ a folder a class, Final_Test/Images/ labelled by "
                                    "GT-final_test.csv; each track's frames on one side")
    train_tracks = {(s.label, s.path.name[:5]) for s in splits.train}
    val_tracks = {(s.label, s.path.name[:5]) for s in splits.val}
    assert val_tracks and not train_tracks & val_tracks
    samples, _ = labelled_samples(tmp_path / "data", splits.classes)
    assert [s.label for s in samples] == [1, 1, 1]
