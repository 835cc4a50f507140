"""Object detection: readers, box transforms, detector building, and real training on coco128."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from headstart.config import DetectionConfig, TrainConfig
from headstart.core.backbones import registry
from headstart.core.strategies import Phase, apply
from headstart.errors import DataError, NotFittedError, WeightsNotFoundError
from headstart.tasks.detection import data as dd
from headstart.tasks.detection.model import build_detector, build_tv_detector
from headstart.tasks.detection.task import Detector

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"
needs_coco = pytest.mark.skipif(not COCO128.is_dir(), reason=f"coco128 not found at {COCO128} (../shared is absent)")
BCCD = COCO128.parent / "bccd"
needs_bccd = pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"{BCCD} is absent (../shared)")
EPOCHS = 5  # the budget of both runs of the pretrained-vs-random comparison (same detector, same epochs)


# ------------------------------------------------------------------------------------------ readers
def _tiny_yolo(tmp_path: Path, labels: dict[str, str]) -> Path:
    """A YOLO folder with three real coco128 images and the given label files."""
    images = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:3]
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for i, src in enumerate(images):
        shutil.copy(src, tmp_path / "images" / "train" / f"im{i}.jpg")
    for name, text in labels.items():
        (tmp_path / "labels" / "train" / f"{name}.txt").write_text(text)
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: person\n  1: car\n")
    return tmp_path


@needs_coco
def test_yolo_bad_boxes_are_clipped_dropped_and_counted(tmp_path: Path) -> None:
    root = _tiny_yolo(tmp_path, {
        "im0": "0 0.5 0.5 0.2 0.2\n1 0.95 0.5 0.3 0.2\n",  # second box reaches past the right edge
        "im1": "0 0.5 0.5 0.0 0.3\n\n",  # zero width: dropped
    })  # im2 has no label file: a background image
    splits = dd.read_yolo(root, val_fraction=0.34, seed=0)
    samples = {s.path.stem: s for s in splits.train + splits.val}
    assert splits.issues[dd.ISSUE_CLIPPED] == 1
    assert splits.issues[dd.ISSUE_DROPPED] == 1
    assert splits.issues[dd.ISSUE_BACKGROUND] == 1
    assert torch.allclose(samples["im0"].boxes[1], torch.tensor([0.8, 0.4, 1.0, 0.6]), atol=1e-6)
    assert len(samples["im1"].boxes) == 0 and len(samples["im2"].boxes) == 0
    assert splits.classes == ["person", "car"]


@needs_coco
def test_yolo_malformed_line_and_unknown_id_name_the_file_and_line(tmp_path: Path) -> None:
    root = _tiny_yolo(tmp_path, {"im0": "0 0.5 0.5 0.2 0.2\n0 0.5 oops 0.2 0.2\n"})
    with pytest.raises(DataError, match=r"im0\.txt:2: expected 'class cx cy w h'"):
        dd.read_yolo(root)
    (root / "labels" / "train" / "im0.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"im0\.txt:2: class id 7 has no name.*2 classes"):
        dd.read_yolo(root)
    (root / "labels" / "train" / "im0.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"im0\.txt:1: expected 5 values"):
        dd.read_yolo(root)


@needs_coco
def test_yolo_and_coco_readers_agree(tmp_path: Path) -> None:
    yolo = dd.read_yolo(COCO128)
    images, annotations = [], []
    for i, s in enumerate(yolo.val):
        with Image.open(s.path) as im:
            w, h = im.size
        images.append({"id": i + 1, "file_name": s.path.name, "width": w, "height": h})
        for box, label in zip(s.boxes.tolist(), s.labels.tolist()):
            x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 100 + label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": 100 + k, "name": n} for k, n in enumerate(yolo.classes)]
    (tmp_path / "images").symlink_to(COCO128 / "images" / "val2017")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))

    coco = dd.read_coco(path, val_fraction=0.25, seed=0)
    assert coco.classes == yolo.classes
    by_name = {s.path.name: s for s in coco.train + coco.val}
    assert len(by_name) == len(yolo.val) == 128
    assert all(p.path.exists() for p in by_name.values())
    boxes = 0
    for s in yolo.val:
        other = by_name[s.path.name]
        assert torch.equal(other.labels, s.labels)
        assert torch.allclose(other.boxes, s.boxes, atol=1e-5)
        boxes += len(s.boxes)
    assert boxes == 898  # coco128 val2017 labels (the readers agree box by box above)

    coco.select_classes(["person"])
    persons = sum(len(s.labels) for s in coco.train + coco.val)
    assert persons == sum(int((s.labels == 0).sum()) for s in yolo.val)
    with pytest.raises(DataError, match="Unknown class"):
        coco.select_classes(["unicorn"])


@needs_coco
def test_a_roboflow_yolo_export_reads_its_parent_relative_folders_and_test_entry(tmp_path: Path) -> None:
    """Roboflow's YOLO export: data.yaml says '../train/images' beside itself (read as Ultralytics does), and its
    'test' entry is a test split, kept out of training and of model selection; a test entry it lacks is said."""
    import yaml

    images = sorted((COCO128 / "images" / "val2017").glob("*.jpg"))[:12]
    for split, chosen in (("train", images[:6]), ("valid", images[6:9]), ("test", images[9:])):
        for sub in ("images", "labels"):
            (tmp_path / split / sub).mkdir(parents=True)
        for image in chosen:
            shutil.copy(image, tmp_path / split / "images")
            label = COCO128 / "labels" / "val2017" / f"{image.stem}.txt"
            if label.exists():
                shutil.copy(label, tmp_path / split / "labels")
    names = yaml.safe_load((COCO128 / "data.yaml").read_text())["names"]
    entries = {"train": "../train/images", "val": "../valid/images", "test": "../test/images"}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({**entries, "nc": len(names), "names": names}))
    splits = dd.discover(tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 3)
    assert [s.path.name for s in splits.test] == [p.name for p in images[9:]]
    assert splits.layout == "YOLO data.yaml, 'test' entry kept aside" and not splits.val_held_out
    shutil.rmtree(tmp_path / "test")
    splits = dd.discover(tmp_path)
    assert not splits.test and "its 'test' entry '../test/images' not found" in splits.layout


@needs_coco
def test_a_labelimg_yolo_folder_without_data_yaml(tmp_path: Path) -> None:
    """labelImg's YOLO export: x.jpg beside x.txt and classes.txt; the same boxes as the data.yaml reader's."""
    import yaml

    from headstart.tasks import infer_task

    names = yaml.safe_load((COCO128 / "data.yaml").read_text())["names"]
    (tmp_path / "classes.txt").write_text("\n".join(names[i] for i in sorted(names)) + "\n")
    images = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:10]
    for image in images:
        shutil.copy(image, tmp_path)
        label = COCO128 / "labels" / "train2017" / f"{image.stem}.txt"
        if label.exists():
            shutil.copy(label, tmp_path)
    assert infer_task(tmp_path) == "detection"
    splits = dd.discover(tmp_path)
    assert splits.layout.startswith("YOLO boxes with classes.txt (no data.yaml)") and len(splits.classes) == 80
    assert (len(splits.train), len(splits.val)) == (8, 2) and splits.val_held_out
    yolo = {s.path.name: s for s in dd.discover(COCO128).train}
    for sample in splits.train + splits.val:
        assert torch.equal(sample.boxes, yolo[sample.path.name].boxes)
        assert torch.equal(sample.labels, yolo[sample.path.name].labels)
    cvat = tmp_path / "cvat_yolo"  # CVAT's "YOLO 1.1": obj.names, obj.data, train.txt beside obj_train_data/
    (cvat / "obj_train_data").mkdir(parents=True)
    for f in tmp_path.iterdir():
        if f.is_file() and f.name != "classes.txt":
            shutil.copy(f, cvat / "obj_train_data")
    shutil.copy(tmp_path / "classes.txt", cvat / "obj.names")
    (cvat / "obj.data").write_text("classes = 80\ntrain = data/train.txt\nnames = data/obj.names\n")
    (cvat / "train.txt").write_text("".join(f"data/obj_train_data/{i.name}\n" for i in images))
    assert infer_task(cvat) == "detection"
    found = dd.discover(cvat)
    assert found.layout.startswith("YOLO boxes with obj.names (no data.yaml)") and len(found.train + found.val) == 10
    assert all(torch.equal(s.boxes, yolo[s.path.name].boxes) for s in found.train + found.val)
    # class folders with a stray classes.txt and a README.txt stay image classification
    other = tmp_path / "folders"
    for name in ("cats", "dogs"):
        (other / name).mkdir(parents=True)
        shutil.copy(images[0], other / name / "a.jpg")
    (other / "classes.txt").write_text("cats\ndogs\n")
    (other / "README.txt").write_text("pets")
    assert infer_task(other) == "image"


def _voc_copy(root: Path, stems: dict[str, list[str]]) -> Path:
    """Some real BCCD smears (images + VOC xml) with ImageSets/Main lists of the given ids."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for split, ids in stems.items():
        for stem in ids:
            shutil.copy(BCCD / "Annotations" / f"{stem}.xml", root / "Annotations")
            shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", root / "JPEGImages")
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@needs_bccd
def test_pascal_voc_folder_is_read_with_its_own_splits_and_errors_name_the_file(tmp_path: Path) -> None:
    import re

    from headstart.tasks import infer_task

    voc = dd.discover(BCCD)
    assert infer_task(BCCD) == "detection" and voc.classes == ["Platelets", "RBC", "WBC"]
    lists = {n: (BCCD / "ImageSets" / "Main" / f"{n}.txt").read_text().split() for n in ("train", "val", "test")}
    assert [[s.path.stem for s in getattr(voc, n)] for n in lists] == list(lists.values())  # test kept aside
    objects = sum(len(re.findall("<object>", x.read_text())) for x in (BCCD / "Annotations").glob("*.xml")
                  if x.stem in set(sum(lists.values(), [])))
    boxes = sum(len(s.boxes) for s in voc.train + voc.val + voc.test)
    assert boxes == objects - voc.issues[dd.ISSUE_DROPPED] and voc.issues[dd.ISSUE_DROPPED] <= 5
    first = next(s for s in voc.train + voc.val + voc.test if s.path.stem == "BloodImage_00000")
    wbc = first.labels.tolist().index(voc.classes.index("WBC"))  # <bndbox> 260 177 491 376 on 640 x 480
    assert first.boxes[wbc].tolist() == pytest.approx([260 / 640, 177 / 480, 491 / 640, 376 / 480])

    ids = sorted(lists["train"])[:6]
    nested = _voc_copy(tmp_path / "mine" / "VOCdevkit" / "VOC2007", {"trainval": ids})
    (nested / "ImageSets" / "Main" / "trainval.txt").unlink()  # no lists: a seeded split
    xml = nested / "Annotations" / f"{ids[0]}.xml"
    xml.write_text(re.sub(r"<size>.*?</size>", "", xml.read_text(), flags=re.S))  # no <size>: the image says
    mine = dd.discover(tmp_path / "mine", val_fraction=0.34, seed=1)
    assert infer_task(tmp_path / "mine") == "detection"
    assert (len(mine.train), len(mine.val)) == (4, 2) and "random validation split" in mine.layout
    assert mine.val_held_out and not voc.val_held_out  # train.refit=auto refits only the first
    again = {s.path.stem: s.boxes for s in mine.train + mine.val}
    original = {s.path.stem: s.boxes for s in voc.train + voc.val + voc.test}
    assert all(torch.allclose(again[k], original[k]) for k in ids)

    xml.write_text(xml.read_text().replace("<bndbox>", "<box>", 1).replace("</bndbox>", "</box>", 1))
    with pytest.raises(DataError, match=rf"{ids[0]}\.xml: object 1 \('\w+'\) has no <bndbox>"):
        dd.discover(tmp_path / "mine")
    (nested / "JPEGImages" / f"{ids[1]}.jpg").unlink()
    xml.unlink()
    with pytest.raises(DataError, match=rf"{ids[1]}\.xml: its image .*{ids[1]}\.jpg does not exist"):
        dd.discover(tmp_path / "mine")


@needs_bccd
def test_labelimg_voc_xmls_in_annotations_beside_images_are_pascal_voc(tmp_path: Path) -> None:
    """The raccoon, face-mask and road-sign sets as downloaded: annotations/*.xml (labelImg) beside images/."""
    from headstart.tasks import infer_task
    from headstart.tasks.multilabel.data import discover as tag_discover

    ids = sorted(p.stem for p in (BCCD / "Annotations").glob("*.xml"))[:12]
    root = tmp_path / "raccoon_dataset"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for i in ids:
        shutil.copy(BCCD / "Annotations" / f"{i}.xml", root / "annotations")
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "images")
    assert infer_task(root) == "detection"
    found = dd.discover(root, val_fraction=0.25, seed=0)
    assert found.layout.startswith("Pascal VOC raccoon_dataset (annotations/, images/)")
    assert len(found.train) + len(found.val) == 12 and found.val_held_out
    original = {s.path.stem: s.boxes for s in dd.discover(BCCD).train + dd.discover(BCCD).val + dd.discover(BCCD).test}
    assert all(torch.equal(s.boxes, original[s.path.stem]) for s in found.train + found.val)
    assert all(s.path.parent == root / "images" for s in found.train + found.val)
    assert tag_discover(root, from_detection=True).classes == found.classes  # --task multilabel: image tags
    coco = tmp_path / "coco"  # annotations/ of COCO jsons stays COCO, not VOC
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "instances_train.json").write_text("{}")
    assert dd.voc_root(coco) is None


def _bccd_truth(n: int = 20) -> tuple[list[str], dict[str, dd.DetSample]]:
    """The first ``n`` BCCD smears' ids, and every smear's VOC sample by id: the boxes the other readers must give."""
    ids = sorted(p.stem for p in (BCCD / "Annotations").glob("*.xml"))[:n]
    found = dd.discover(BCCD)
    return ids, {s.path.stem: s for s in found.train + found.val + found.test}


def _box_rows(ids: list[str]) -> list[str]:
    """BCCD's VOC boxes as TensorFlow Object Detection CSV rows: filename,width,height,class,xmin,ymin,xmax,ymax."""
    import xml.etree.ElementTree as ET

    rows = []
    for i in ids:
        root = ET.parse(BCCD / "Annotations" / f"{i}.xml").getroot()
        w, h = root.findtext("size/width"), root.findtext("size/height")
        for obj in root.iter("object"):
            box = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
            rows.append(",".join([f"{i}.jpg", w, h, obj.findtext("name"), *box]))
    return rows


@needs_bccd
def test_tables_of_boxes_as_the_raccoon_set_and_roboflow_export_them(tmp_path: Path) -> None:
    from headstart.tasks import infer_task

    header = "filename,width,height,class,xmin,ymin,xmax,ymax"
    ids, voc = _bccd_truth()
    # the raccoon set: data/train_labels.csv naming images/ beside data/
    root = tmp_path / "raccoon_dataset"
    (root / "data").mkdir(parents=True)
    (root / "images").mkdir()
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "images")
    (root / "data" / "train_labels.csv").write_text("\n".join([header, *_box_rows(ids)]) + "\n")
    table = root / "data" / "train_labels.csv"
    assert infer_task(table) == "detection"
    found = dd.discover(table, val_fraction=0.25, seed=0)
    assert found.classes == ["Platelets", "RBC", "WBC"] and len(found.train) + len(found.val) == 20
    assert found.layout.startswith("table of boxes train_labels.csv (files found as ../images/<value>")
    for s in found.train + found.val:
        assert s.path == root / "images" / f"{s.path.stem}.jpg"
        assert torch.allclose(s.boxes, voc[s.path.stem].boxes, atol=1e-6)
        assert sorted(s.labels.tolist()) == sorted(voc[s.path.stem].labels.tolist())
    # Roboflow's TensorFlow CSV export: train/, valid/, test/ each with _annotations.csv beside its images
    export = tmp_path / "roboflow"
    for split, part in (("train", ids[:12]), ("valid", ids[12:16]), ("test", ids[16:])):
        (export / split).mkdir(parents=True)
        for i in part:
            shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", export / split)
        (export / split / "_annotations.csv").write_text("\n".join([header, *_box_rows(part)]) + "\n")
    assert infer_task(export) == "detection"
    found = dd.discover(export)
    assert (len(found.train), len(found.val), len(found.test)) == (12, 4, 4) and not found.val_held_out
    assert all(torch.allclose(s.boxes, voc[s.path.stem].boxes, atol=1e-6) for s in found.val + found.test)
    (export / "valid" / "_annotations.csv").write_text(header + "\nnot_there.jpg,640,480,RBC,1,2,3,4\n")
    with pytest.raises(DataError, match=r"_annotations.csv: 1 image\(s\) it names do not exist"):
        dd.discover(export)


def _coco_json(ids: list[str]) -> dict:
    """BCCD's VOC boxes of ``ids`` as a COCO instances file (categories numbered from 1, as CVAT writes them)."""
    rows = [r.split(",") for r in _box_rows(ids)]
    names = sorted({r[3] for r in rows})
    images = [{"id": n + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480} for n, i in enumerate(ids)]
    number = {i: n + 1 for n, i in enumerate(ids)}
    notes = [{"id": k + 1, "image_id": number[r[0][:-4]], "category_id": names.index(r[3]) + 1, "iscrowd": 0,
              "bbox": [float(r[4]), float(r[5]), float(r[6]) - float(r[4]), float(r[7]) - float(r[5])]}
             for k, r in enumerate(rows)]
    return {"images": images, "annotations": notes,
            "categories": [{"id": n + 1, "name": c, "supercategory": ""} for n, c in enumerate(names)]}


@needs_bccd
def test_folders_of_coco_jsons_and_box_tables_as_downloaded(tmp_path: Path) -> None:
    """CVAT's and Label Studio's COCO export (annotations/instances_default.json beside images/), COCO's own layout
    (annotations/ of captions_, instances_, person_keypoints_ jsons beside train2017/, val2017/), Kaggle's car set
    (a box table without classes beside training_images/ and a sample_submission.csv of boxes), the raccoon set's
    data/ folder of tables, labelImg's .xml files beside their images and Kaggle's fruit set (train_zip/train/ of
    images and .xml files) were read as class folders (or refused) when given as the folder."""
    from headstart.tasks import infer_task

    ids, voc = _bccd_truth()
    cvat = tmp_path / "cvat"
    (cvat / "images").mkdir(parents=True)
    (cvat / "annotations").mkdir()
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", cvat / "images")
    (cvat / "annotations" / "instances_default.json").write_text(json.dumps(_coco_json(ids)))
    assert infer_task(cvat) == "detection"
    found = dd.discover(cvat)
    assert found.layout.startswith("COCO annotations/instances_default.json, 20% random validation split"), found.layout
    assert len(found.train) + len(found.val) == 20 and found.classes == ["Platelets", "RBC", "WBC"]
    for s in found.train + found.val:
        assert s.path == cvat / "images" / f"{s.path.stem}.jpg"
        assert torch.allclose(s.boxes, voc[s.path.stem].boxes, atol=1e-6)
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for split, part in (("train2017", ids[:14]), ("val2017", ids[14:])):
        (coco / split).mkdir()
        for i in part:
            shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", coco / split)
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(_coco_json(part)))
        (coco / "annotations" / f"captions_{split}.json").write_text(json.dumps(
            {"images": _coco_json(part)["images"], "annotations": [{"id": 1, "image_id": 1, "caption": "cells"}]}))
    assert infer_task(coco) == "detection"
    found = dd.discover(coco)
    assert found.layout == "COCO instances_train2017.json + instances_val2017.json"
    assert (len(found.train), len(found.val)) == (14, 6) and all(s.path.is_file() for s in found.train + found.val)
    cars = tmp_path / "car_detection"
    (cars / "training_images").mkdir(parents=True)
    (cars / "testing_images").mkdir()
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", cars / "training_images")
    shutil.copy(BCCD / "JPEGImages" / f"{ids[0]}.jpg", cars / "testing_images" / "vid_5_400.jpg")
    wbc = [r.split(",") for r in _box_rows(ids) if ",WBC," in r]
    (cars / "train_solution_bounding_boxes (1).csv").write_text(
        "image,xmin,ymin,xmax,ymax\n" + "".join(f"{r[0]},{','.join(r[4:])}\n" for r in wbc))
    (cars / "sample_submission.csv").write_text("image,xmin,ymin,xmax,ymax\nvid_5_400.jpg,0,0,1,1\n")
    assert infer_task(cars) == "detection"
    found = dd.discover(cars)
    assert found.layout.startswith("table of boxes (train_solution_bounding_boxes (1).csv) (no class column: one "
                                   "class 'object'; files found as training_images/<value>"), found.layout
    assert found.classes == ["object"] and sum(len(s.labels) for s in found.train + found.val) == len(wbc)
    raccoon = tmp_path / "raccoon_dataset"
    (raccoon / "data").mkdir(parents=True)
    (raccoon / "images").mkdir()
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", raccoon / "images")
    header = "filename,width,height,class,xmin,ymin,xmax,ymax"
    for name, part in (("train_labels", ids[:16]), ("test_labels", ids[16:]), ("raccoon_labels", ids)):
        (raccoon / "data" / f"{name}.csv").write_text("\n".join([header, *_box_rows(part)]) + "\n")
    assert infer_task(raccoon / "data") == "detection"
    found = dd.discover(raccoon / "data")
    assert found.layout.startswith("tables of boxes (train_labels.csv, test_labels.csv)"), found.layout
    assert (len(found.train) + len(found.val), len(found.test)) == (16, 4)
    labelimg = tmp_path / "my_photos"  # labelImg's default: each .xml beside its image; two not labelled yet
    labelimg.mkdir()
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", labelimg)
        if i not in ids[:2]:
            shutil.copy(BCCD / "Annotations" / f"{i}.xml", labelimg)
    assert infer_task(labelimg) == "detection"
    found = dd.discover(labelimg)
    assert found.layout.startswith("Pascal VOC files beside the images, 20% random validation split"), found.layout
    assert len(found.train) + len(found.val) == 18 and found.issues[dd.ISSUE_UNNOTED] == 2
    assert all(torch.allclose(s.boxes, voc[s.path.stem].boxes, atol=1e-6) for s in found.train + found.val)
    fruits = tmp_path / "fruit-images-for-object-detection"  # Kaggle's: train_zip/train/, test_zip/test/
    for split, part in (("train_zip/train", ids[:14]), ("test_zip/test", ids[14:])):
        (fruits / split).mkdir(parents=True)
        for i in part:
            shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", fruits / split)
            shutil.copy(BCCD / "Annotations" / f"{i}.xml", fruits / split)
    assert infer_task(fruits) == "detection"
    found = dd.discover(fruits)
    assert found.layout.startswith("Pascal VOC files in train_zip/train/, test_zip/test/"), found.layout
    assert (len(found.train) + len(found.val), len(found.test)) == (14, 6)


@needs_bccd
def test_detector_trains_on_a_pascal_voc_folder_from_the_command_line(tmp_path: Path) -> None:
    """``headstart train VOC`` infers detection and learns RBCs on 24 real smears (linear, cached features)."""
    from typer.testing import CliRunner

    from headstart.cli import app

    lists = {n: (BCCD / "ImageSets" / "Main" / f"{n}.txt").read_text().split() for n in ("train", "val", "test")}
    root = _voc_copy(tmp_path / "voc", {"train": lists["train"][:16], "val": lists["val"][:8],
                                        "test": lists["test"][6:10]})
    res = CliRunner().invoke(app, ["train", str(root), "detection.image_size=160", "cache.views=1",
                                   f"cache.dir={tmp_path / 'cache'}", "--strategy", "linear", "--epochs", "4",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["classes"] == ["Platelets", "RBC", "WBC"] and metrics["num_train"] == 16
    rbc = metrics["val"]["per_class"]["RBC"]
    print("VOC run:", metrics["val"]["map_50"], rbc)
    assert rbc["boxes"] > 50 and rbc["ap_50"] > 0.05  # a detector that learned nothing scores ~0 here
    # the data's test list, kept out of training and of model selection, is scored at the end by the saved model
    assert metrics["test"]["num_images"] == 4 and "test kept aside" in metrics["layout"]
    tested = Detector.load(tmp_path / "run").evaluate(root)  # evaluate reads the same test list
    assert tested["map_50"] == pytest.approx(metrics["test"]["map_50"], abs=1e-4)
    assert "Test (4 images, the saved model): mAP@0.5:0.95" in (tmp_path / "run" / "report.md").read_text()
    assert "Test mAP (the saved model)" in (tmp_path / "run" / "report.html").read_text()

    test = lists["test"][:6]
    _voc_copy(tmp_path / "held", {"train": lists["train"][:2], "val": lists["val"][:2], "test": test})
    report = Detector.load(tmp_path / "run").evaluate(tmp_path / "held")  # the data's own test split, not val
    boxes = sum(len(s.boxes) for s in dd.discover(tmp_path / "held").test)
    assert sum(c["boxes"] for c in report["per_class"].values()) == boxes and len(test) == 6

    for path in (root / "ImageSets" / "Main").iterdir():  # no lists: validation held out of the items, then refit
        path.unlink()
    res = CliRunner().invoke(app, ["train", str(root), "detection.image_size=160", "cache.views=1", "train.refit=auto",
                                   f"cache.dir={tmp_path / 'cache'}", "--strategy", "linear", "--epochs", "1",
                                   "--out", str(tmp_path / "refit")])
    assert res.exit_code == 0, res.output
    refit = json.loads((tmp_path / "refit" / "metrics.json").read_text())["refit"]
    assert refit["num_train"] == 16 + 8 + 4, refit  # trained again on train + validation (every image)


# ------------------------------------------------------------------------------------- transforms
def _bright_box(image: torch.Tensor) -> list[float]:
    """Bounding box of the bright pixels of an image tensor [3, H, W] in [0, 1]."""
    ys, xs = torch.nonzero(image.mean(0) > 0.8, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_box_transforms_keep_boxes_aligned_with_pixels() -> None:
    image = Image.new("RGB", (400, 300), (0, 0, 0))
    ImageDraw.Draw(image).rectangle([250, 60, 329, 199], fill=(255, 255, 255))  # pixels 250..329 x 60..199
    boxes = torch.tensor([[250 / 400, 60 / 300, 330 / 400, 200 / 300]])

    x, target = dd.eval_transform(200)(*dd.to_tv(image, boxes, torch.tensor([0])))
    assert x.shape == (3, 200, 200)
    assert torch.allclose(target["boxes"].as_subclass(torch.Tensor)[0], torch.tensor([125.0, 30.0, 165.0, 100.0]))
    assert x[:, 160:, :].mean() == pytest.approx(114 / 255, abs=1e-3)  # letterbox padding below the image

    tf = dd.train_transform(320, "light")  # flip + scale/translate (colour would move the threshold)
    flips = 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, target = tf(*dd.to_tv(image, boxes, torch.tensor([0])))
        box = target["boxes"].as_subclass(torch.Tensor)
        if len(box) == 0:
            continue
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
        expected = torch.tensor(_bright_box(x), dtype=torch.float32)
        assert torch.allclose(box[0], expected, atol=2.5), (seed, box[0], expected)
        flips += int(box[0, 0] < 160)
    assert 0 < flips < 12  # both flipped and unflipped views were checked


@pytest.mark.skipif(not COCO128.is_dir(), reason="coco128 is absent (the ../shared data folder)")
def test_the_letterbox_is_the_onnx_engines_pixel_for_pixel() -> None:
    """Training's evaluation letterbox and the ONNX engine's (numpy / PIL, no torch) give the same pixels for real
    photos of many sizes: torchvision's uint8 resize would round about one value in 1000 the other way, which
    flips which of two crowded boxes non-maximum suppression keeps."""
    import numpy as np

    from headstart.deploy.onnx_engine import letterbox_array

    photos = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:6]
    for photo, size in zip(photos, (256, 320, 320, 416, 512, 333)):
        with Image.open(photo) as im:
            image = im.convert("RGB")
        ours = dd.eval_transform(size)(*dd.to_tv(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))[0]
        engine = letterbox_array(image, size)
        assert ours.shape == engine.shape == (3, size, size)
        assert np.abs(ours.as_subclass(torch.Tensor).numpy() - engine).max() < 1e-6, photo.name


def test_detections_in_the_letterbox_padding_are_dropped() -> None:
    """A 200 x 100 image letterboxed to a square: boxes the detector finds in the padding below it are no detections;
    a box mostly inside is clipped to the image; in letterbox pixels for the reports too (``inside_images``)."""
    from headstart.tasks.detection import clipped_to_image
    from headstart.tasks.detection.training import inside_images

    boxes = [[10, 10, 50, 50],  # inside
             [20, 120, 80, 180],  # wholly below the image, in the padding
             [100, 80, 140, 110],  # 2/3 inside: kept, clipped at the bottom edge
             [150, 90, 190, 150],  # 1/6 inside: dropped
             [190, 10, 230, 60]]  # 3/4 of it right of the image: dropped
    clipped, keep = clipped_to_image(boxes, 200, 100)
    assert keep.tolist() == [True, False, True, False, False]
    assert clipped[2].tolist() == [100, 80, 140, 100]
    preds = [{"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.linspace(0.9, 0.5, 5),
              "labels": torch.tensor([1, 2, 1, 2, 1])}]
    kept = inside_images(preds, [(200, 100)])[0]
    assert kept["boxes"].tolist() == [[10, 10, 50, 50], [100, 80, 140, 100]]
    assert kept["labels"].tolist() == [1, 1] and kept["scores"].tolist() == pytest.approx([0.9, 0.7])


# ---------------------------------------------------------------------------------------- models
def test_tv_detectors_get_new_predictors_without_downloading() -> None:
    cfg = DetectionConfig(image_size=320)
    frcnn = build_tv_detector("tv:fasterrcnn_mobilenet_v3_large_fpn", 2, cfg, pretrained=False)
    predictor = frcnn.detector.roi_heads.box_predictor
    assert (predictor.cls_score.out_features, predictor.bbox_pred.out_features) == (3, 12)
    ssd = build_tv_detector("tv:ssdlite320_mobilenet_v3_large", 2, cfg, pretrained=False)
    heads = ssd.detector.head.classification_head.module_list
    anchors = ssd.detector.anchor_generator.num_anchors_per_location()
    assert [m[1].out_channels for m in heads] == [k * 3 for k in anchors]
    retina = build_tv_detector("tv:retinanet_resnet50_fpn", 5, cfg, pretrained=False)
    assert retina.detector.head.classification_head.cls_logits.out_channels == 9 * 6
    assert retina.detector.head.classification_head.num_classes == 6
    fcos = build_tv_detector("tv:fcos_resnet50_fpn", 1, cfg, pretrained=False)
    assert fcos.detector.head.classification_head.cls_logits.out_channels == 2
    # the model runs and predicts only the new labels
    frcnn.eval()
    with torch.no_grad():
        out = frcnn([torch.rand(3, 240, 320)])[0]
    assert set(out["labels"].tolist()) <= {1, 2}
    # layer groups: the body's stages, then the FPN (neck) and the heads
    assert frcnn.backbone.num_groups >= 10 and set(frcnn.head) == {"neck", "heads"}


def test_missing_coco_weights_fail_fast_naming_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HEADSTART_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "hub" / "checkpoints")):
        build_tv_detector("tv:ssdlite320_mobilenet_v3_large", 1, DetectionConfig(), pretrained=True)


def test_strategies_freeze_detector_groups_with_frozen_batchnorm() -> None:
    backbone = registry.create_backbone("mobilenet_v2")
    model = build_detector(backbone, 1, DetectionConfig(family="retinanet"), freeze_bn=True)
    frozen = apply(model, Phase("partial:2", 1, 2))
    model.apply_frozen_bn()
    model.train()
    n = backbone.num_groups
    assert frozen == set(range(n - 2))
    trains = {g for g in range(n) if any(p.requires_grad for _, p in backbone.group_parameters(g))}
    assert trains == {n - 2, n - 1}
    bns = [m for m in backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # frozen BN: ImageNet statistics are kept
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    stats = bns[-1].running_mean.clone()
    model(torch.rand(2, 3, 320, 320), [{"boxes": torch.tensor([[10.0, 10.0, 90.0, 120.0]]), "labels": torch.tensor([1])}] * 2)
    assert torch.equal(stats, bns[-1].running_mean)
    # from scratch: real BatchNorm that learns its statistics
    scratch = build_detector(registry.create_backbone("mobilenet_v2", pretrained=False), 1, DetectionConfig(), False)
    apply(scratch, Phase("full", 1, n))
    scratch.apply_frozen_bn()
    scratch.train()
    assert all(m.training for m in scratch.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert TrainConfig().strategy  # the vocabulary is the shared one


def test_predict_before_fit_raises() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        Detector().predict(["x.jpg"])


# ----------------------------------------------------------------------------- training on coco128
def _train(out: Path, pretrained: bool, cache_dir: Path) -> Detector:
    det = Detector(model="mobilenet_v2", family="fcos", strategy="linear", epochs=EPOCHS, classes="person",
                   pretrained=pretrained, image_size=256, cache_views=1,
                   overrides={"train.eval_every": EPOCHS, "cache.dir": str(cache_dir)})
    return det.fit(COCO128, out=out)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("det-cache")


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Detector:
    return _train(tmp_path_factory.mktemp("det") / "pretrained", True, cache_dir)


@needs_coco
@pytest.mark.slow
def test_pretrained_backbone_beats_random_init_on_coco128_person(pretrained_run: Detector, tmp_path: Path) -> None:
    random_run = _train(tmp_path / "random", False, tmp_path / "cache")  # a frozen random backbone: cached too
    ours, baseline = pretrained_run.metrics_["val_map_50"], random_run.metrics_["val_map_50"]
    print(f"mAP@0.5 person, {EPOCHS} epochs, frozen backbone: pretrained {ours:.4f}, random init {baseline:.4f}; "
          f"s/epoch {pretrained_run.metrics_['seconds_per_epoch']} vs {random_run.metrics_['seconds_per_epoch']}")
    assert ours >= 0.02
    assert ours > 2 * baseline + 0.01


@needs_coco
@pytest.mark.slow
def test_run_folder_predict_and_evaluate(pretrained_run: Detector, tmp_path: Path) -> None:
    run = pretrained_run.run_dir_
    metrics = json.loads((run / "metrics.json").read_text())
    person = metrics["val"]["per_class"]["person"]
    assert metrics["classes"] == ["person"] and person["boxes"] == 350
    assert 0 <= metrics["val"]["map"] <= metrics["val"]["map_50"] <= 1 and person["ap_50"] == pytest.approx(
        metrics["val_map_50"], abs=1e-5)  # per-class APs are rounded to 5 decimals
    assert metrics["cache"]["items_computed"] + metrics["cache"]["items_served"] >= 256
    for name in ("pr_curve.png", "val_predictions.png", "model.safetensors", "spec.json", "history.csv", "report.md"):
        assert (run / name).stat().st_size > 0, name
    assert not (run / "checkpoint.pt").exists()

    loaded = Detector.load(run)
    files = sorted((COCO128 / "images" / "val2017").glob("*.jpg"))[:3]
    rows = loaded.predict(files, save_images=tmp_path / "drawn")
    assert [r["path"] for r in rows] == [str(f) for f in files]
    for r in rows:
        with Image.open(r["path"]) as im:
            assert (r["width"], r["height"]) == im.size
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert d["label"] == "person" and 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
        scores = [d["score"] for d in r["detections"]]
        assert scores == sorted(scores, reverse=True)
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 3
    assert sum(len(r["detections"]) for r in rows) > 0

    report = loaded.evaluate(COCO128)  # its val split: the same 128 images as during fit
    assert report["map_50"] == pytest.approx(metrics["val_map_50"], abs=0.01)
    assert os.path.getsize(run / "val_predictions.png") > 10_000


@needs_coco
@pytest.mark.slow
def test_interrupted_run_resumes_from_its_checkpoint(pretrained_run: Detector, cache_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from headstart.core import loop

    save = loop.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # as if Ctrl-C came right after epoch 1 was saved

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    det = Detector(model="mobilenet_v2", family="fcos", strategy="linear", epochs=2, classes="person",
                   image_size=256, cache_views=1, overrides={"cache.dir": str(cache_dir)})
    with pytest.raises(KeyboardInterrupt):
        det.fit(COCO128, out=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    monkeypatch.setattr(loop, "save_checkpoint", save)
    resumed = Detector.resume(tmp_path / "run")
    assert [row["epoch"] for row in resumed.history_] == [1, 2]
    assert resumed.metrics_["cache"]["items_computed"] == 0  # the features of the first run were reused
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert 0 <= resumed.metrics_["val_map_50"] <= 1


@needs_bccd
def test_tables_of_boxes_as_rsna_pneumonia_and_global_wheat_write_them(tmp_path: Path) -> None:
    """Boxes as a top-left corner and a size, without a class column: RSNA Pneumonia's stage_2_train_labels.csv
    (patientId,x,y,width,height,Target; a row of blank box cells for an image without one; ids of a folder of
    images) and Global Wheat's train.csv (image_id,width,height,bbox,source; bbox "[x, y, w, h]")."""
    import xml.etree.ElementTree as ET

    from headstart.tasks import infer_task

    ids = sorted(p.stem for p in (BCCD / "Annotations").glob("*.xml"))[:24]
    truth: dict[str, list[list[float]]] = {}
    rsna, wheat = ["patientId,x,y,width,height,Target"], ["image_id,width,height,bbox,source"]
    (tmp_path / "stage_2_train_images").mkdir()
    (tmp_path / "wheat" / "train").mkdir(parents=True)
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", tmp_path / "stage_2_train_images")
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", tmp_path / "wheat" / "train")
        root = ET.parse(BCCD / "Annotations" / f"{i}.xml").getroot()
        w, h = float(root.findtext("size/width")), float(root.findtext("size/height"))
        truth[i] = []
        for obj in root.iter("object"):
            if obj.findtext("name") != "Platelets":  # one class, as both sets have
                continue
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            truth[i].append([x1 / w, y1 / h, min(x2, w) / w, min(y2, h) / h])
            rsna.append(f"{i},{x1},{y1},{x2 - x1},{y2 - y1},1")
            wheat.append(f'{i},{w:.0f},{h:.0f},"[{x1}, {y1}, {x2 - x1}, {y2 - y1}]",bccd')
        if not truth[i]:
            rsna.append(f"{i},,,,,0")
    assert any(not boxes for boxes in truth.values())  # images without a platelet: listed, without a box
    (tmp_path / "stage_2_train_labels.csv").write_text("\n".join(rsna) + "\n")
    (tmp_path / "wheat" / "train.csv").write_text("\n".join(wheat) + "\n")
    for table, how in ((tmp_path / "stage_2_train_labels.csv", "boxes as x, y, width, height; "),
                       (tmp_path / "wheat" / "train.csv", "boxes as bbox; ")):
        assert infer_task(table) == "detection"
        found = dd.discover(table, val_fraction=0.25, seed=0)
        assert found.classes == ["object"]
        assert f"({how}no class column: one class 'object'; files found as " in found.layout, found.layout
        read = {s.path.stem: s for s in found.train + found.val}
        expected = truth if "x, y" in how else {i: b for i, b in truth.items() if b}  # Global Wheat lists boxes only
        assert sorted(read) == sorted(expected)
        for i, boxes in expected.items():
            assert torch.allclose(read[i].boxes, torch.tensor(boxes).reshape(-1, 4), atol=1e-5), i
            assert read[i].labels.tolist() == [0] * len(boxes)
    (tmp_path / "bad.csv").write_text("image_id,bbox\n" + f'{ids[0]}.jpg,"[1, 2, 3]"\n')
    with pytest.raises(DataError, match=r"bad.csv:2: expected numbers in bbox, found \['\[1, 2, 3\]'\]"):
        dd.discover(tmp_path / "bad.csv")


@needs_bccd
def test_roboflow_coco_and_voc_exports_in_split_folders(tmp_path: Path) -> None:
    """Roboflow's "COCO JSON" export (train/, valid/, test/ each with its images and _annotations.coco.json, whose
    first category, named after the dataset, is the others' supercategory) and its "Pascal VOC" export (each split's
    images beside their .xml files): the boxes of BCCD's own VOC annotations."""
    import json as jsonlib
    import xml.etree.ElementTree as ET

    from headstart.tasks import infer_task

    ids = sorted(p.stem for p in (BCCD / "Annotations").glob("*.xml"))[:20]
    voc = {s.path.stem: s for s in dd.discover(BCCD).train + dd.discover(BCCD).val + dd.discover(BCCD).test}
    names = ["Platelets", "RBC", "WBC"]
    coco, pascal = tmp_path / "coco-export", tmp_path / "voc-export"
    for split, part in (("train", ids[:12]), ("valid", ids[12:16]), ("test", ids[16:])):
        (coco / split).mkdir(parents=True)
        (pascal / split).mkdir(parents=True)
        images, annotations = [], []
        for n, i in enumerate(part):
            for folder in (coco, pascal):
                shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", folder / split / f"{i}_jpg.rf.{n:04x}.jpg")
            root = ET.parse(BCCD / "Annotations" / f"{i}.xml").getroot()
            root.find("filename").text = f"{i}_jpg.rf.{n:04x}.jpg"
            ET.ElementTree(root).write(pascal / split / f"{i}_jpg.rf.{n:04x}.xml")
            w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
            images.append({"id": n, "file_name": f"{i}_jpg.rf.{n:04x}.jpg", "width": w, "height": h})
            for obj in root.iter("object"):
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
                annotations.append({"id": len(annotations), "image_id": n, "category_id": names.index(
                    obj.findtext("name")) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0})
        categories = [{"id": 0, "name": "cells", "supercategory": "none"},
                      *({"id": k + 1, "name": c, "supercategory": "cells"} for k, c in enumerate(names))]
        (coco / split / "_annotations.coco.json").write_text(jsonlib.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    (coco / "README.roboflow.txt").write_text("exported from roboflow.com\n")
    for export, kind in ((coco, "COCO"), (pascal, "Pascal VOC")):
        assert infer_task(export) == "detection"
        found = dd.discover(export)
        assert found.classes == names, found.classes
        assert found.layout.startswith(f"{kind} files in train/, valid/, test/"), found.layout
        assert (len(found.train), len(found.val), len(found.test)) == (12, 4, 4) and not found.val_held_out
        for s in found.train + found.val + found.test:
            truth = voc[s.path.name.split("_jpg")[0]]
            assert torch.allclose(s.boxes, truth.boxes, atol=1e-5)
            assert sorted(s.labels.tolist()) == sorted(truth.labels.tolist())
    assert "('cells', the other categories' supercategory without a box, is not a class)" in dd.discover(coco).layout


@needs_bccd
def test_a_class_the_detector_never_finds_is_named():
    """BCCD's own boxes as the detections: no warning; the same without any Platelets detection (the small, rare
    cells): a warning names Platelets and its box count, while mAP@0.5 stays high."""
    from headstart.tasks.detection import data as dd
    from headstart.tasks.detection.metrics import detection_report

    found = dd.discover(BCCD)
    samples = (found.train + found.val)[:40]
    targets = [{"boxes": s.boxes * 640, "labels": s.labels + 1} for s in samples]
    perfect = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    assert not detection_report(perfect, targets, found.classes)["warnings"]
    platelets = found.classes.index("Platelets") + 1
    lost = [{k: v[p["labels"] != platelets] for k, v in p.items()} for p in perfect]
    report = detection_report(lost, targets, found.classes)
    boxes = sum(int((t["labels"] == platelets).sum()) for t in targets)
    assert report["map_50"] > 0.5 and len(report["warnings"]) == 1, report["warnings"]
    assert f"1 class(es) found almost never (AP@0.5 under 0.01), though these images hold them: 'Platelets' ({boxes} " \
           "boxes)" in report["warnings"][0]


@pytest.mark.skipif(not BCCD.is_dir(), reason="bccd is absent (the ../shared data folder)")
def test_a_hub_repository_of_images_and_boxes_as_cppe5_lays_it_out(tmp_path: Path) -> None:
    """A Hugging Face dataset repository as downloaded (``data/train-00000-of-00001.parquet``, ``data/test-...``,
    written by the ``datasets`` library): an Image column, ``width``/``height`` and ``objects`` of COCO boxes with a
    ClassLabel ``category``: detection, the ClassLabel names the classes, BCCD's own boxes read back, the images read
    from the Parquet rows for training, and a box without a category refused naming its row."""
    datasets = pytest.importorskip("datasets")
    found = dd.discover(BCCD)
    items = {"train": found.train[:12], "test": found.test[:4]}
    features = datasets.Features({
        "image": datasets.Image(), "width": datasets.Value("int32"), "height": datasets.Value("int32"),
        "objects": datasets.Sequence({"bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                                      "category": datasets.ClassLabel(names=found.classes)})})
    (tmp_path / "data").mkdir()
    for split, samples in items.items():
        rows = []
        for s in samples:
            w, h = Image.open(s.path).size
            boxes = s.boxes.tolist()
            rows.append({"image": {"bytes": s.path.read_bytes(), "path": s.path.name}, "width": w, "height": h,
                         "objects": {"bbox": [[x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h] for x1, y1, x2, y2 in boxes],
                                     "category": [int(c) for c in s.labels]}})
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    from headstart.tasks import infer_task

    assert infer_task(tmp_path) == "detection"
    splits = dd.discover(tmp_path)
    assert splits.classes == found.classes and "Parquet files of images and boxes" in splits.layout
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (12, 4)
    for split, samples in (("train", splits.train + splits.val), ("test", splits.test)):
        for s in samples:
            want = items[split][int(s.path.name.split(":")[1])]
            assert torch.equal(s.labels, want.labels) and torch.allclose(s.boxes, want.boxes, atol=1e-5)
    data = dd.DetectionData(splits, 256, preload_mb=0)  # the images, from their Parquet rows
    image, target = data.dataset("val", train=False, epoch=0)[0]
    assert image.shape == (3, 256, 256) and len(target["boxes"]) == len(splits.val[0].boxes)

    from headstart.evidence.compare import make_pool
    from headstart.tasks import get_task

    pool = make_pool(get_task("detection"), tmp_path, 0.25, {})  # compare's split files: the rows' images as files
    train, val = pool.split(0, 0.25)
    written = dd.discover(pool.write(tmp_path / "cmp", "seed0", train, val))
    assert (len(written.train), len(written.val)) == (len(train), len(val))
    for s, i in zip(written.train + written.val, train + val):
        assert s.path.read_bytes() == pool.items[i].data.read()
        assert torch.equal(s.labels, pool.items[i].labels) and torch.allclose(s.boxes, pool.items[i].boxes, atol=1e-5)

    from headstart.evidence.advise import _Crop, _CropFiles, box_statistics  # advise measures the rows' images

    stats = box_statistics(splits.train + splits.val, splits.classes)
    assert stats["unreadable"] == 0 and stats["median_longest_side"] == 640 and stats["boxes"] > 0, stats
    s = splits.train[0]
    crop = _Crop(s.path, tuple(s.boxes[0].tolist()), 0, s.data)
    assert _CropFiles().hash(crop) == hashlib.sha1(s.data.read()).hexdigest()
    assert _CropFiles().image(crop, "bilinear") is not None

    bad = datasets.Dataset.from_list([{"image": {"bytes": found.test[0].path.read_bytes(), "path": "x.jpg"},
                                       "objects": {"bbox": [[1, 2, 3, 4]], "category": [None]}}])
    bad.to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(DataError, match="a box without a category"):
        dd.discover(tmp_path)
