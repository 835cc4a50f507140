"""LabelMe's annotations (``tasks/detection/labelme.py``): a ``.json`` beside each image, as people who draw their own
boxes save them. Written here from real BCCD blood smears and their Pascal VOC boxes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detection import BCCD, needs_bccd

from headstart.errors import DataError
from headstart.tasks import infer_task
from headstart.tasks.detection import data as dd
from headstart.tasks.labelme import ISSUE_NOT_AREAS, ISSUE_UNANNOTATED

pytestmark = needs_bccd


def _labelme(folder: Path, stem: str, image_path: str | None = None, extra: list[dict] | None = None) -> None:
    """BCCD's ``stem`` as LabelMe saves it: the image beside its .json of rectangles (corners in either order)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", folder / f"{stem}.jpg")
    root = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
    shapes = []
    for i, obj in enumerate(root.iter("object")):
        b = obj.find("bndbox")
        x1, y1, x2, y2 = (float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        points = [[x1, y1], [x2, y2]] if i % 2 else [[x2, y2], [x1, y1]]  # drawn from either corner
        shapes.append({"label": obj.findtext("name").strip(), "points": points, "group_id": None,
                       "shape_type": "rectangle", "flags": {}})
    size = root.find("size")
    (folder / f"{stem}.json").write_text(json.dumps({
        "version": "5.4.1", "flags": {}, "shapes": shapes + (extra or []),
        "imagePath": image_path or f"{stem}.jpg", "imageData": None,
        "imageHeight": int(size.findtext("height")), "imageWidth": int(size.findtext("width"))}))


def test_a_labelme_folder_reads_as_the_same_boxes_as_pascal_voc(tmp_path):
    """The boxes of LabelMe rectangles equal the VOC boxes of the same smears; a polygon gives the box around it, a
    point is left out and counted; an image without a .json is not read and counted; imagePath with Windows
    separators is found."""
    stems = [p.stem for p in sorted((BCCD / "Annotations").glob("*.xml"))[:12]]
    folder = tmp_path / "smears"
    polygon = {"label": "Platelets", "points": [[10, 20], [40, 5], [30, 50]], "shape_type": "polygon"}
    point = {"label": "RBC", "points": [[5, 5]], "shape_type": "point"}
    for i, stem in enumerate(stems):
        _labelme(folder, stem, image_path=f"..\\smears\\{stem}.jpg" if i == 0 else None,
                 extra=[polygon, point] if i == 1 else None)
    shutil.copy(BCCD / "JPEGImages" / f"{stems[0]}.jpg", folder / "not_annotated_yet.jpg")
    assert infer_task(folder) == "detection"
    splits = dd.discover(folder, val_fraction=0.25, seed=0)
    voc = dd.read_voc(BCCD)
    by_path = {s.path.name: s for s in voc.train + voc.val + voc.test}
    assert splits.classes == voc.classes == ["Platelets", "RBC", "WBC"]
    assert (len(splits.train), len(splits.val)) == (9, 3) and splits.val_held_out
    assert splits.layout.startswith("LabelMe smears (12 files), 25% random validation split")
    for s in splits.train + splits.val:
        ref = by_path[s.path.name]
        boxes, labels = s.boxes, s.labels
        if s.path.stem == stems[1]:  # the polygon's box: (10, 5)-(40, 50), and no point
            width, height = 640, 480
            assert torch.allclose(boxes[-1], torch.tensor([10 / width, 5 / height, 40 / width, 50 / height]))
            boxes, labels = boxes[:-1], labels[:-1]
        assert torch.allclose(boxes, ref.boxes) and torch.equal(labels, ref.labels)
    assert splits.issues[ISSUE_NOT_AREAS] == 1 and splits.issues[ISSUE_UNANNOTATED] == 1


def test_labelme_split_folders_and_errors_name_the_file(tmp_path):
    stems = [p.stem for p in sorted((BCCD / "Annotations").glob("*.xml"))[:9]]
    root = tmp_path / "cells"
    for stem in stems[:6]:
        _labelme(root / "train", stem)
    for stem in stems[6:]:
        _labelme(root / "val", stem)
    assert infer_task(root) == "detection"
    splits = dd.discover(root)
    assert (len(splits.train), len(splits.val)) == (6, 3) and not splits.val_held_out
    assert splits.layout == "LabelMe cells (train/ 6, val/ 3)"

    broken = json.loads((root / "val" / f"{stems[6]}.json").read_text())
    broken["shapes"][0]["label"] = " "
    (root / "val" / f"{stems[6]}.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match=rf"{stems[6]}.json: shape 1 has no label"):
        dd.discover(root)
    broken["shapes"][0]["label"] = "RBC"
    broken["imagePath"] = "elsewhere/missing.jpg"
    (root / "val" / f"{stems[6]}.json").write_text(json.dumps(broken))
    (root / "val" / f"{stems[6]}.jpg").unlink()
    with pytest.raises(DataError, match=r"missing.jpg does not exist \(an image embedded as imageData is not read"):
        dd.discover(root)


def test_labelme_outlines_read_as_segmentation_masks_and_train(tmp_path):
    """--task segmentation on LabelMe files: background + the labels, each outline drawn (an ellipse-like polygon
    inside each BCCD cell's box, a circle, a rectangle) as COCO polygons are; a point is not drawn; a short run trains
    and scores above the all-background baseline's mIoU."""
    from headstart.tasks.segmentation import data as sd
    from headstart.tasks.segmentation.task import Segmenter

    stems = [p.stem for p in sorted((BCCD / "Annotations").glob("*.xml"))[:16]]
    folder = tmp_path / "outlines"
    for stem in stems:
        _labelme(folder, stem)
        path = folder / f"{stem}.json"
        data = json.loads(path.read_text())
        for shape in data["shapes"]:  # a cell's outline: the octagon inside its box
            (x1, y1), (x2, y2) = sorted(shape["points"])
            w, h = x2 - x1, y2 - y1
            shape["shape_type"] = "polygon"
            shape["points"] = [[x1 + w * fx, y1 + h * fy] for fx, fy in ((0.3, 0), (0.7, 0), (1, 0.3), (1, 0.7),
                                                                         (0.7, 1), (0.3, 1), (0, 0.7), (0, 0.3))]
        data["shapes"] += [{"label": "RBC", "points": [[100, 100], [100, 120]], "shape_type": "circle"},
                           {"label": "WBC", "points": [[600, 440], [630, 470]], "shape_type": "rectangle"},
                           {"label": "WBC", "points": [[3, 3]], "shape_type": "point"}] if stem == stems[0] else []
        path.write_text(json.dumps(data))
    assert infer_task(folder) == "detection"  # boxes by default; --task segmentation reads the outlines
    assert "only polygons" not in dd.discover(folder).layout  # (the first file has a circle and a rectangle)
    splits = sd.discover(folder, val_fraction=0.25, seed=0)
    assert splits.classes == ["background", "Platelets", "RBC", "WBC"] and (len(splits.train), len(splits.val)) == (12, 4)
    assert any("1 LabelMe shape(s) that mark no area" in n for n in splits.notes)
    first = next(s for s in splits.train + splits.val if s.image.stem == stems[0])
    mask = first.read_mask()
    assert mask.shape == (480, 640) and mask[110, 100] == 2 and (mask[445:465, 605:625] == 3).all()
    assert mask[0, 0] == 0 and {0, 2, 3} <= set(np.unique(mask).tolist()) <= {0, 1, 2, 3}

    seg = Segmenter(epochs=2, image_size=128).fit(folder, task_out := tmp_path / "run")
    assert seg.metrics_["val_miou"] > seg.metrics_["val"]["baseline"]["miou"]
    assert task_out.is_dir()
